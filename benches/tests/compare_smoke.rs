//! Runs the comparison binary end to end in quick mode and checks that it prints a row for
//! every workload. Performance is measured, not asserted: no timing is checked here.

use std::process::Command;

#[test]
fn quick_comparison_prints_every_workload_row() {
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--quick", "--runs", "1"])
        .output()
        .expect("run the compare binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "compare --quick failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    for workload in [
        "put 100 B",
        "get hit 100 B",
        "get miss",
        "put 1 MiB",
        "get 1 MiB",
        "put 64 MiB random (stream)",
        "get 64 MiB random (stream)",
        "peak RSS, put 64 MiB",
        "peak RSS, get 64 MiB",
        "put 64 MiB arange (stream)",
        "get 64 MiB arange (stream)",
        "stored size, 64 MiB arange",
        "memoized hit (get_with)",
    ] {
        let row = rows
            .iter()
            .find(|r| {
                r.trim_start_matches("| ")
                    .starts_with(&format!("{workload} "))
            })
            .unwrap_or_else(|| panic!("no row for {workload:?} in:\n{stdout}"));
        // Every row has a cachet figure (not the "–" of a missing measurement).
        let cachet_cell = row.split('|').nth(2).unwrap_or("").trim();
        assert!(
            !cachet_cell.is_empty() && !cachet_cell.starts_with('–'),
            "no cachet figure in row {row:?}"
        );
    }
    assert!(
        stdout.contains("cachet/cacache"),
        "no ratio column:\n{stdout}"
    );
    assert!(
        stdout.contains("1 MiB files: + fdatasync + dir fsync"),
        "no disk floor lines:\n{stdout}"
    );
}
