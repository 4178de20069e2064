//! The promises the SQL-cache benchmark measures, checked on a small scale (5 symbols, one
//! year) so that CI keeps them true: a warm query makes no fetch, a query one day past the
//! coverage fetches exactly that day, once. Performance is measured, not asserted.

use cachet_benches::sqlcache_workload::{
    Fetched, MONTH, Scale, Workload, YEAR, day, price, trading_days,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn loaded(rt: &tokio::runtime::Runtime) -> Workload {
    let workload = Workload::open(Scale::small()).expect("open");
    rt.block_on(workload.load()).expect("load");
    workload
}

#[test]
fn loading_fetches_each_symbol_once_with_every_trading_day() {
    let rt = runtime();
    let workload = Workload::open(Scale::small()).expect("open");
    let load = rt.block_on(workload.load()).expect("load");
    assert_eq!(load.fetch_calls, 5);
    assert_eq!(load.rows, 5 * 261);
    let fetched = workload.log.since(0);
    assert_eq!(
        fetched[0],
        Fetched {
            symbol: "SYM0000".into(),
            start: day("2025-01-01"),
            end: day("2026-01-01"),
        }
    );
    assert_eq!(
        rt.block_on(workload.cache.stats()).expect("stats").rows,
        5 * 261
    );
}

#[test]
fn warm_queries_make_no_fetch_call_and_return_the_fetched_rows() {
    let rt = runtime();
    let workload = loaded(&rt);
    let mark = workload.log.calls();
    for (days, rows) in [(YEAR, 261), (MONTH, 23)] {
        assert_eq!(workload.warm_rows(days), rows);
        for i in 0..10 {
            let got = rt.block_on(workload.warm(i, days)).expect("warm query");
            assert_eq!(got.len(), rows);
            let symbol = &workload.symbols[i % 5];
            assert_eq!(got[0], price(symbol, day("2025-12-31") - (days - 1)));
        }
    }
    assert_eq!(workload.check_no_fetch(mark), Ok(()));
    assert_eq!(workload.log.calls(), mark);
    assert_eq!(
        rt.block_on(workload.cache.stats())
            .expect("stats")
            .fetch_calls,
        5
    );
}

#[test]
fn each_one_day_extension_fetches_exactly_that_day_once() {
    let rt = runtime();
    let mut workload = loaded(&rt);
    let mark = workload.log.calls();
    // Twelve extensions, the five symbols in turn: 2026-01-01 and 2026-01-02 for each, then
    // 2026-01-03 (a Saturday: fetched, no row) for the first two.
    let extensions: Vec<_> = (0..12)
        .map(|_| {
            rt.block_on(workload.extend_by_one_day())
                .expect("extension")
        })
        .collect();
    assert_eq!(workload.check_extensions(mark, &extensions), Ok(()));
    let fetched = workload.log.since(mark);
    assert_eq!(fetched.len(), 12);
    assert!(fetched.iter().all(|f| f.days() == 1));
    assert_eq!(
        fetched[5],
        Fetched {
            symbol: "SYM0000".into(),
            start: day("2026-01-02"),
            end: day("2026-01-03"),
        }
    );
    assert_eq!(
        fetched[10],
        Fetched {
            symbol: "SYM0000".into(),
            start: day("2026-01-03"),
            end: day("2026-01-04"),
        }
    );
    assert_eq!(
        extensions[10].rows,
        trading_days(day("2026-01-04") - YEAR, day("2026-01-04"))
    );
    // Covered now: asking again fetches nothing.
    let again = workload.log.calls();
    rt.block_on(workload.warm(0, YEAR)).expect("warm query");
    assert_eq!(workload.check_no_fetch(again), Ok(()));
}

#[test]
fn a_wrong_fetch_is_reported_by_the_checks() {
    let rt = runtime();
    let mut workload = loaded(&rt);
    let mark = workload.log.calls();
    let extension = rt
        .block_on(workload.extend_by_one_day())
        .expect("extension");
    assert!(workload.check_no_fetch(mark).is_err());
    let mut claimed = extension;
    claimed.day += 1;
    assert!(workload.check_extensions(mark, &[claimed]).is_err());
    assert!(workload.check_extensions(mark, &[]).is_err());
}

#[test]
fn the_report_binary_runs_quick_and_meets_its_expectations() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sqlcache"))
        .args(["--quick", "--queries", "20", "--extensions", "10"])
        .output()
        .expect("run the sqlcache binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sqlcache --quick failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("fetch-call expectations: all met"),
        "{stdout}"
    );
    assert!(stdout.contains("| warm 1 year, one symbol"), "{stdout}");
}
