//! Issue #15 part 2 through the binary: the product firmware rules (released vs
//! uploaded, device groups, lock now, lock on reset, unlock) with the directory
//! source and command-handler devices.

mod process;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use process::{free_port, http_get, text, until_or, with_config as agent, write_exec};

/// Offers version `v` of type `t`, with `extra` `.properties` lines.
fn offer(tmp: &Path, v: &str, extra: &str) {
    let fw = tmp.join("firmware/t");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join(format!("fw-{v}.bin")), format!("firmware {v}")).unwrap();
    std::fs::write(
        fw.join(format!("fw-{v}.properties")),
        format!("version = {v}\nimage = fw-{v}.bin\n{extra}"),
    )
    .unwrap();
}

/// A command device `id` running `start`: its version is in `<id>.version`; it
/// does not answer while `<id>.offline` exists; every version read and update
/// is logged to `<id>.calls`. `keys` are more `[[device]]` lines.
fn device(tmp: &Path, id: &str, start: &str, keys: &str) -> String {
    let d = tmp.display();
    std::fs::write(tmp.join(format!("{id}.version")), format!("{start}\n")).unwrap();
    write_exec(
        &tmp.join(format!("{id}-version.sh")),
        &format!(
            "if [ -e {d}/{id}.offline ]; then echo offline >> {d}/{id}.calls; exit 1; fi\n\
             echo version >> {d}/{id}.calls\ncat {d}/{id}.version\n"
        ),
    );
    write_exec(
        &tmp.join(format!("{id}-update.sh")),
        &format!(
            "echo \"update $FOTA_VERSION\" >> {d}/{id}.calls\n\
             echo \"$FOTA_VERSION\" > {d}/{id}.version\n"
        ),
    );
    format!(
        "[[device]]\nid = \"{id}\"\ntype = \"t\"\nhandler = \"command\"\n{keys}\
         version_command = [\"{d}/{id}-version.sh\"]\nupdate_command = [\"{d}/{id}-update.sh\"]\n"
    )
}

fn config(tmp: &Path, agent_keys: &str, status: &str, devices: &[String]) -> PathBuf {
    let d = tmp.display();
    let path = tmp.join("config.toml");
    let text = format!(
        "[agent]\nstate_dir = \"{d}/state\"\n{agent_keys}[status]\n{status}\n\
         [source]\nkind = \"directory\"\npath = \"{d}/firmware\"\n{}",
        devices.concat()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A test folder offering `offers` (version, `.properties` lines).
fn folder(offers: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (v, extra) in offers {
        offer(tmp.path(), v, extra);
    }
    tmp
}

/// A folder with `offers` (version, `.properties` lines) and one device `dev`
/// running `start` with `keys`; no status endpoint.
fn one_device(offers: &[(&str, &str)], start: &str, keys: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = folder(offers);
    let t = tmp.path();
    let config = config(t, "", "listen = \"off\"", &[device(t, "dev", start, keys)]);
    (tmp, config)
}

fn version(tmp: &Path, id: &str) -> String {
    std::fs::read_to_string(tmp.join(format!("{id}.version")))
        .unwrap()
        .trim()
        .to_string()
}

fn calls(tmp: &Path, id: &str) -> String {
    std::fs::read_to_string(tmp.join(format!("{id}.calls"))).unwrap_or_default()
}

fn run(config: &Path, args: &[&str]) -> Output {
    agent(config).args(args).output().unwrap()
}

/// Runs `args`, which must succeed; returns the output.
fn ok(config: &Path, args: &[&str]) -> String {
    let out = run(config, args);
    let log = text(&out);
    assert!(out.status.success(), "{args:?}: {log}");
    log
}

/// Runs `args`, which must fail; returns the output.
fn fails(config: &Path, args: &[&str]) -> String {
    let out = run(config, args);
    let log = text(&out);
    assert!(!out.status.success(), "{args:?} succeeded: {log}");
    log
}

#[test]
fn released_uploaded_and_group_firmware_each_reach_their_devices() {
    let tmp = folder(&[
        ("2.0", ""),
        ("3.0", "released = false\n"),
        ("4.0", "groups = beta\n"),
    ]);
    let t = tmp.path();
    let devices = [
        device(t, "plain", "1.0", ""),
        device(t, "tester", "1.0", "group = \"test\"\n"),
        device(t, "beta", "1.0", "group = \"beta\"\n"),
    ];
    let config = config(t, "", "listen = \"off\"", &devices);
    let check = ok(&config, &["check"]);
    for line in [
        "not 3.0: not released; device is not in a test group",
        "not 4.0: released to group beta only",
    ] {
        assert!(check.contains(line), "{check}");
    }
    assert_eq!(
        check.matches("released to group beta only").count(),
        2,
        "{check}"
    );
    ok(&config, &["run", "--once"]);
    assert_eq!(version(t, "plain"), "2.0");
    assert_eq!(version(t, "tester"), "3.0");
    assert_eq!(version(t, "beta"), "4.0");
    // Releasing 3.0 brings the plain device to it, not further.
    offer(t, "3.0", "released = true\n");
    ok(&config, &["run", "--once"]);
    assert_eq!(version(t, "plain"), "3.0");
}

#[test]
fn a_bad_release_key_skips_that_firmware_with_its_line() {
    let (tmp, config) = one_device(&[("2.0", ""), ("3.0", "released = maybe\n")], "1.0", "");
    let t = tmp.path();
    let log = ok(&config, &["run", "--once"]);
    assert!(
        log.contains("fw-3.0.properties:3: released: must be true or false"),
        "{log}"
    );
    assert_eq!(version(t, "dev"), "2.0");
}

#[test]
fn lock_now_downgrades_holds_the_device_and_unlock_releases_it() {
    let (tmp, config) = one_device(&[("2.0", ""), ("3.0", "")], "3.0", "");
    let t = tmp.path();
    let said = ok(&config, &["lock", "dev", "2.0"]);
    assert!(said.contains("dev: locked to 2.0"), "{said}");
    let check = ok(&config, &["check"]);
    assert!(check.contains("would get=2.0"), "{check}");
    assert!(check.contains("not 3.0: locked to 2.0"), "{check}");
    ok(&config, &["run", "--once"]);
    assert_eq!(version(t, "dev"), "2.0");
    // No other update reaches it, through a cycle or `install`.
    offer(t, "4.0", "");
    ok(&config, &["run", "--once"]);
    assert_eq!(version(t, "dev"), "2.0");
    let image = t.join("firmware/t/fw-4.0.bin").display().to_string();
    let refused = fails(
        &config,
        &["install", "--device", "dev", &image, "--version", "4.0"],
    );
    assert!(refused.contains("device is locked to 2.0"), "{refused}");
    let check = ok(&config, &["check"]);
    assert!(check.contains("locked to 2.0\n"), "{check}");
    assert!(check.contains("not 4.0: locked to 2.0"), "{check}");
    assert_eq!(calls(t, "dev").matches("update").count(), 1);
    ok(&config, &["unlock", "dev"]);
    ok(&config, &["run", "--once"]);
    assert_eq!(version(t, "dev"), "4.0");
    // The command line's mistakes are named.
    let again = fails(&config, &["unlock", "dev"]);
    assert!(again.contains("device \"dev\" is not locked"), "{again}");
    let unknown = fails(&config, &["lock", "nodev", "2.0"]);
    assert!(
        unknown.contains("unknown device \"nodev\" (configured: dev)"),
        "{unknown}"
    );
    let bad = fails(&config, &["lock", "dev", ".."]);
    assert!(
        bad.contains("cannot lock to \"..\": \"..\" is not a valid esh version"),
        "{bad}"
    );
    let shell = fails(&config, &["lock", "dev", "2;reboot"]);
    assert!(shell.contains("cannot lock to \"2;reboot\""), "{shell}");
}

#[test]
fn a_config_lock_flashes_now_and_is_changed_only_in_the_config() {
    let offers = [("2.0", "released = false\n"), ("3.0", "")];
    let (tmp, config) = one_device(&offers, "3.0", "lock = \"2.0\"\n");
    let t = tmp.path();
    ok(&config, &["run", "--once"]);
    assert_eq!(version(t, "dev"), "2.0");
    for args in [&["unlock", "dev"][..], &["lock", "dev", "3.0"]] {
        let refused = fails(&config, args);
        assert!(refused.contains("is locked to 2.0 in"), "{refused}");
    }
}

#[test]
fn a_lock_on_reset_waits_until_the_device_went_away_and_came_back() {
    let tmp = folder(&[("2.0", ""), ("3.0", "")]);
    let t = tmp.path();
    let port = free_port();
    let config = config(
        t,
        "poll_interval = \"100ms\"\n",
        &format!("listen = \"127.0.0.1:{port}\""),
        &[device(t, "dev", "3.0", "")],
    );
    let log = t.join("agent.log");
    let mut child = process::start_run(&config, Stdio::from(std::fs::File::create(&log).unwrap()));
    let context = || {
        format!(
            "{}\n{}",
            calls(t, "dev"),
            std::fs::read_to_string(&log).unwrap()
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        until_or(
            "the first cycle",
            || calls(t, "dev").contains("version"),
            context,
        )
        .await;
        ok(&config, &["lock", "dev", "2.0", "--on-reset"]);
        let status = || http_get(port, "/status").unwrap_or_default();
        until_or(
            "the agent to see the lock",
            || status().contains("locked to 2.0 (on reset): waiting for the device to restart"),
            context,
        )
        .await;
        // While the device keeps answering, nothing is installed.
        let reads = calls(t, "dev").matches("version").count();
        until_or(
            "three more cycles",
            || calls(t, "dev").matches("version").count() >= reads + 3,
            context,
        )
        .await;
        assert!(!calls(t, "dev").contains("update"), "{}", context());
        let shown = ok(&config, &["status"]);
        assert!(
            shown.contains("dev: locked to 2.0 (on reset): waiting"),
            "{shown}"
        );
        // The device restarts: unanswered, then answering again.
        std::fs::write(t.join("dev.offline"), "").unwrap();
        until_or(
            "an unanswered read",
            || calls(t, "dev").contains("offline"),
            context,
        )
        .await;
        std::fs::remove_file(t.join("dev.offline")).unwrap();
        until_or("the locked version", || version(t, "dev") == "2.0", context).await;
        until_or(
            "the status to show it",
            || status().contains("\"current_version\":\"2.0\""),
            context,
        )
        .await;
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        calls(t, "dev").matches("update").count(),
        1,
        "{}",
        context()
    );
}

#[test]
fn a_lock_on_reset_set_while_the_agent_was_stopped_is_due_at_its_start() {
    let (tmp, config) = one_device(&[("2.0", ""), ("3.0", "")], "3.0", "");
    let t = tmp.path();
    ok(&config, &["lock", "dev", "2.0", "--on-reset"]);
    // `check` is not a start: it only explains.
    let check = ok(&config, &["check"]);
    assert!(
        check.contains("locked to 2.0 (on reset): waiting for the device to restart"),
        "{check}"
    );
    assert!(check.contains("status=UPDATE_AVAILABLE"), "{check}");
    ok(&config, &["run", "--once"]);
    assert_eq!(version(t, "dev"), "2.0");
}
