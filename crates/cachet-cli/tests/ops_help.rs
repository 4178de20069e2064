//! `--help` of query, cleanup, verify, repair, gc, export, import and migrate reads well, and
//! progress bars never reach a pipe.

mod ops_support;

use cachet::Cache;
use ops_support::*;

const COMMANDS: &[&str] = &[
    "query", "cleanup", "verify", "repair", "gc", "export", "import", "migrate",
];

#[test]
fn every_maintenance_command_explains_itself_in_help() {
    for command in COMMANDS {
        let out = cachet_raw(&[command, "--help"]);
        expect_code(&out, 0);
        let help = stdout(&out);
        assert!(help.contains(&format!("Usage: cachet {command}")), "{help}");
        // A paragraph after the options says what the command does beyond the one-liner.
        let after = help.rsplit("Print version").next().unwrap();
        assert!(
            after.trim().len() > 150,
            "`{command} --help` has no explanation:\n{help}"
        );
        for line in after.lines() {
            assert!(
                line.len() <= 100,
                "`{command} --help` line too long: {line}"
            );
        }
    }
}

#[test]
fn the_command_list_names_every_maintenance_command() {
    let out = cachet_raw(&["--help"]);
    expect_code(&out, 0);
    let help = stdout(&out);
    for command in COMMANDS {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from:\n{help}"
        );
    }
}

#[tokio::test]
async fn progress_bars_and_escape_codes_stay_off_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    for i in 0..50u64 {
        cache
            .insert_bytes(format!("k{i}").as_str(), noise(100_000, i))
            .await
            .unwrap();
    }
    cache.flush().await.unwrap();
    drop(cache);
    let target = dir.path().join("copy");
    let archive = dir.path().join("a.tar");

    for args in [
        vec!["verify"],
        vec!["repair", "--dry-run"],
        vec!["cleanup", "--max-size", "1MB", "--dry-run"],
        vec!["export", archive.to_str().unwrap()],
        vec!["migrate", "--to-cache", target.to_str().unwrap()],
    ] {
        let out = cachet(dir.path(), &args);
        expect_code(&out, 0);
        let err = stderr(&out);
        assert!(
            !err.contains('\u{1b}'),
            "{args:?} wrote escape codes: {err:?}"
        );
        assert!(
            !err.contains("[=") && !err.contains("=>"),
            "{args:?} drew a bar: {err}"
        );
    }
    let out = cachet(&target, &["import", archive.to_str().unwrap()]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains('\u{1b}'));
}
