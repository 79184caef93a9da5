//! Issue #17 through the binary, without systemd: a private `dbus-daemon` as the
//! system bus, Debian's real `rauc service` on it with two file-backed raw slots
//! and a custom bootloader backend, a stand-in logind (both in tests/rauc_gateway/),
//! bundles signed with a test CA made here by openssl, and the agent with the
//! directory source. A reboot is simulated: the agent and RAUC are stopped, the
//! boot state's primary slot becomes the booted one (`--override-boot-slot`),
//! and both start again.

#[path = "rauc_gateway/logind.rs"]
mod logind;
mod process;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use process::{free_port, http_get, until_or, with_config, write_exec};

const COMPATIBLE: &str = "acme-gw";
const SLOT_SIZE: u64 = 1 << 20;

/// The external tools the test drives; .ci/run installs them.
fn require_tools() {
    for tool in ["rauc", "dbus-daemon", "dbus-send", "mksquashfs", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(found, "{tool} is not installed (.ci/run installs it)");
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        process::text(&out)
    );
}

/// A private bus, RAUC on it, the agent, and the files they share.
struct Gateway {
    tmp: tempfile::TempDir,
    bus: Child,
    rauc: Option<Child>,
    agent: Option<Child>,
    runs: u32,
    port: u16,
    /// No `reboot_command`: the agent asks logind (tests/rauc_gateway/logind.rs).
    via_logind: bool,
    health_timeout: &'static str,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for child in [self.agent.as_mut(), self.rauc.as_mut(), Some(&mut self.bus)]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Gateway {
    /// Slots rootfs.0 (booted, the factory image 1.0) and rootfs.1, a CA, the bus.
    fn new(health_ok: bool) -> Self {
        require_tools();
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for slot in ["slot0", "slot1"] {
            std::fs::File::create(d.join(slot))
                .unwrap()
                .set_len(SLOT_SIZE)
                .unwrap();
        }
        std::fs::write(
            d.join("boot-state"),
            "PRIMARY=system0\nCURRENT=system0\nSTATE_system0=good\nSTATE_system1=good\n",
        )
        .unwrap();
        let backend =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rauc_gateway/custom-backend.sh");
        let p = d.display();
        std::fs::write(
            d.join("system.conf"),
            format!(
                "[system]\ncompatible={COMPATIBLE}\nbootloader=custom\ndata-directory={p}/rauc-data\n\
                 [handlers]\nbootloader-custom-backend={}\n\
                 [keyring]\npath={p}/ca.pem\n\
                 [slot.rootfs.0]\ndevice={p}/slot0\ntype=raw\nbootname=system0\n\
                 [slot.rootfs.1]\ndevice={p}/slot1\ntype=raw\nbootname=system1\n",
                backend.display()
            ),
        )
        .unwrap();
        for dir in ["rauc-data", "mnt", "firmware"] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
        }
        std::fs::write(d.join("os-release"), "ID=acme\nVERSION_ID=1.0\n").unwrap();
        write_exec(
            &d.join("health.sh"),
            if health_ok {
                "exit 0\n"
            } else {
                "echo unhealthy >&2; exit 3\n"
            },
        );
        write_exec(
            &d.join("reboot.sh"),
            &format!("echo reboot >> {p}/reboots\n"),
        );
        std::fs::write(
            d.join("bus.conf"),
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><listen>unix:path={p}/bus</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n"
            ),
        )
        .unwrap();
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={p}/bus.conf"))
            .arg("--nofork")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let port = free_port();
        let gw = Gateway {
            tmp,
            bus,
            rauc: None,
            agent: None,
            runs: 0,
            port,
            via_logind: false,
            health_timeout: "10s",
        };
        gw.make_signer("ca");
        gw.configure("", "");
        gw
    }

    /// A self-signed key and certificate `<name>.key`, `<name>.pem` (`ca` is the
    /// one in RAUC's keyring).
    fn make_signer(&self, name: &str) {
        run(Command::new("openssl").current_dir(self.dir()).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN=fota-agent test {name}"),
        ]));
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn bus_address(&self) -> String {
        format!("unix:path={}/bus", self.dir().display())
    }

    /// The agent's config, with `agent` lines added to `[agent]` and `device`
    /// lines to the gateway's `[[device]]`.
    fn configure(&self, agent: &str, device: &str) {
        let p = self.dir().display();
        let reboot = match self.via_logind {
            true => String::new(),
            false => format!("reboot_command = [\"{p}/reboot.sh\"]\n"),
        };
        std::fs::write(
            self.dir().join("config.toml"),
            format!(
                "[agent]\nstate_dir = \"{p}/state\"\nconfirm_window = \"20s\"\n{agent}\
                 [status]\nlisten = \"127.0.0.1:{}\"\n\
                 [source]\nkind = \"directory\"\npath = \"{p}/firmware\"\n\
                 [[device]]\nid = \"gateway\"\ntype = \"{COMPATIBLE}\"\nhandler = \"rauc\"\n\
                 health_command = [\"{p}/health.sh\"]\nhealth_timeout = \"{}\"\n\
                 min_uptime = \"1s\"\n{reboot}\
                 reboot_timeout = \"10min\"\nos_release = \"{p}/os-release\"\n{device}",
                self.port, self.health_timeout
            ),
        )
        .unwrap();
    }

    /// A bundle of version `version` for `compatible`, signed by `signer`
    /// (`ca` is the keyring's), offered to the gateway.
    fn offer(&self, version: &str, compatible: &str, signer: &str) -> Vec<u8> {
        let d = self.dir();
        let content = d.join(format!("content-{version}"));
        std::fs::create_dir_all(&content).unwrap();
        let image: Vec<u8> = format!("rootfs {version}\n")
            .bytes()
            .cycle()
            .take(64 * 1024)
            .collect();
        std::fs::write(content.join("rootfs.img"), &image).unwrap();
        std::fs::write(
            content.join("manifest.raucm"),
            format!(
                "[update]\ncompatible={compatible}\nversion={version}\n\
                 [image.rootfs]\nfilename=rootfs.img\n"
            ),
        )
        .unwrap();
        let folder = d.join("firmware").join(COMPATIBLE);
        std::fs::create_dir_all(&folder).unwrap();
        let bundle = folder.join(format!("update-{version}.raucb"));
        run(Command::new("rauc")
            .current_dir(d)
            .args([
                "bundle",
                &format!("--cert={signer}.pem"),
                &format!("--key={signer}.key"),
            ])
            .arg(&content)
            .arg(&bundle));
        std::fs::write(
            folder.join("update.properties"),
            format!("version = {version}\nimage = update-{version}.raucb\n"),
        )
        .unwrap();
        image
    }

    fn boot_state(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir().join("boot-state")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
    }

    fn reboots(&self) -> usize {
        std::fs::read_to_string(self.dir().join("reboots"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn slot(&self, n: u8) -> Vec<u8> {
        std::fs::read(self.dir().join(format!("slot{n}"))).unwrap()
    }

    /// The agent's log of every run so far.
    fn log(&self) -> String {
        (1..=self.runs)
            .map(|n| {
                std::fs::read_to_string(self.dir().join(format!("agent-{n}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// `rauc service` with the boot state's CURRENT slot booted; returns once
    /// it owns its name on the bus.
    async fn start_rauc(&mut self) {
        let d = self.dir().to_path_buf();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(d.join("rauc.log"))
            .unwrap();
        let child = Command::new("rauc")
            .arg(format!("--conf={}", d.join("system.conf").display()))
            .arg(format!("--mount={}", d.join("mnt").display()))
            .arg("service")
            .arg(format!(
                "--override-boot-slot={}",
                self.boot_state("CURRENT")
            ))
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .env("FOTA_TEST_BOOT_STATE", d.join("boot-state"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.rauc = Some(child);
        let address = self.bus_address();
        until_or(
            "RAUC on the bus",
            || {
                Command::new("dbus-send")
                    .arg(format!("--bus={address}"))
                    .args([
                        "--print-reply",
                        "--dest=org.freedesktop.DBus",
                        "/org/freedesktop/DBus",
                        "org.freedesktop.DBus.NameHasOwner",
                        "string:de.pengutronix.rauc",
                    ])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
            },
            || std::fs::read_to_string(d.join("rauc.log")).unwrap_or_default(),
        )
        .await;
    }

    fn start_agent(&mut self) {
        self.runs += 1;
        let log =
            std::fs::File::create(self.dir().join(format!("agent-{}.log", self.runs))).unwrap();
        let child = with_config(&self.dir().join("config.toml"))
            .arg("run")
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    /// Power goes: the agent is killed, RAUC too; the bootloader boots the
    /// primary slot; RAUC and the agent start again.
    async fn reboot(&mut self) {
        self.power_cycle(false).await;
    }

    /// [`Self::reboot`]; with `agent_first` the agent starts before RAUC is on
    /// the bus, and RAUC only once the agent waits for it.
    async fn power_cycle(&mut self, agent_first: bool) {
        for child in [self.agent.take(), self.rauc.take()].into_iter().flatten() {
            let mut child = child;
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let primary = self.boot_state("PRIMARY");
        let text = std::fs::read_to_string(self.dir().join("boot-state")).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("CURRENT=") {
                    format!("CURRENT={primary}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(self.dir().join("boot-state"), text).unwrap();
        if agent_first {
            self.start_agent();
            self.until("the agent waiting for RAUC", |g| {
                g.log().contains("waiting for the RAUC service")
            })
            .await;
            self.start_rauc().await;
        } else {
            self.start_rauc().await;
            self.start_agent();
        }
    }

    /// The agent's record of the gateway (devices/gateway.json).
    fn record(&self) -> serde_json::Value {
        std::fs::read(self.dir().join("state/devices/gateway.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn outcome(&self) -> Option<String> {
        let r = self.record();
        (r["in_flight"].is_null() && !r["last_outcome"].is_null())
            .then(|| r["last_outcome"].to_string())
    }

    async fn until(&self, what: &str, f: impl Fn(&Self) -> bool) {
        until_or(
            what,
            || f(self),
            || format!("{}\nrecord: {}", self.log(), self.record()),
        )
        .await;
    }

    /// The version the status endpoint reports for the gateway.
    fn reported(&self) -> bool {
        http_get(self.port, "/status").is_some_and(|s| s.contains("\"current_version\":\"2.0\""))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn installs_into_the_other_slot_reboots_and_marks_it_good() {
    let mut gw = Gateway::new(true);
    gw.via_logind = true;
    gw.configure("", "");
    let _logind = logind::serve(&gw.bus_address(), gw.dir().join("reboots")).await;
    let image = gw.offer("2.0", COMPATIBLE, "ca");
    gw.start_rauc().await;
    gw.start_agent();
    gw.until("the reboot into the new slot", |g| g.reboots() == 1)
        .await;
    assert_eq!(
        &gw.slot(1)[..image.len()],
        &image[..],
        "rootfs.1 holds the bundle's image"
    );
    assert!(
        gw.slot(0).iter().all(|b| *b == 0),
        "the booted slot is untouched"
    );
    assert_eq!(gw.boot_state("PRIMARY"), "system1");
    assert!(
        gw.outcome().is_none(),
        "no outcome before the reboot: {}",
        gw.record()
    );
    gw.until("UPDATING, then REBOOTING reported", |g| {
        let log = g.log();
        let at = |step: &str| log.find(&format!("step={step}"));
        log.contains("update started: DOWNLOADING → TRANSFERRING → UPDATING → REBOOTING")
            && at("UPDATING").is_some_and(|u| at("REBOOTING").is_some_and(|r| u < r))
    })
    .await;

    // After the reboot the agent comes up before RAUC, and waits for it.
    gw.power_cycle(true).await;
    gw.until("success after the reboot", |g| {
        g.outcome()
            .is_some_and(|o| o.contains("Success") || o.contains("success"))
    })
    .await;
    assert_eq!(
        gw.boot_state("STATE_system1"),
        "good",
        "the booted slot is marked good"
    );
    assert_eq!(gw.boot_state("CURRENT"), "system1");
    gw.until("version 2.0 reported", Gateway::reported).await;
    assert_eq!(gw.reboots(), 1, "no further reboot");
    let asked = std::fs::read_to_string(gw.dir().join("reboots")).unwrap();
    assert_eq!(
        asked, "interactive=false\n",
        "logind's Reboot, never interactive"
    );
    let log = gw.log();
    let percents: Vec<u32> = log
        .lines()
        .filter_map(|l| {
            l.split("TRANSFERRING ")
                .nth(1)?
                .split('%')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        percents.contains(&100) && percents.iter().any(|p| (1..100).contains(p)),
        "RAUC's progress reported while it installs: {percents:?}"
    );
}

/// Offers 2.0 built for `compatible`, signed by `signer`, and returns the
/// failure, once sure no slot was written and nothing rebooted.
async fn refused(compatible: &str, signer: &str) -> String {
    let mut gw = Gateway::new(true);
    if signer != "ca" {
        gw.make_signer(signer);
    }
    gw.offer("2.0", compatible, signer);
    gw.start_rauc().await;
    gw.start_agent();
    gw.until("the update's failure", |g| g.outcome().is_some())
        .await;
    assert_eq!(gw.reboots(), 0);
    assert_eq!(
        gw.boot_state("PRIMARY"),
        "system0",
        "the running slot stays primary"
    );
    assert!(
        gw.slot(0).iter().chain(&gw.slot(1)).all(|b| *b == 0),
        "no slot written"
    );
    gw.outcome().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_for_another_compatible_is_refused_by_rauc() {
    let outcome = refused("someone-elses-board", "ca").await;
    assert!(
        outcome.contains("RAUC refused the bundle") && outcome.contains("someone-elses-board"),
        "{outcome}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_signed_by_an_unknown_key_is_refused_by_rauc() {
    let outcome = refused(COMPATIBLE, "stranger").await;
    assert!(
        outcome.contains("RAUC refused the bundle") && outcome.contains("signature"),
        "{outcome}"
    );
}

/// Offers 2.0 and reboots into it; its health check fails. Returns the
/// failure, once sure the new slot was marked bad and the gateway rebooted back.
async fn rolled_back(gw: &mut Gateway) -> String {
    gw.offer("2.0", COMPATIBLE, "ca");
    gw.start_rauc().await;
    gw.start_agent();
    gw.until("the reboot into the new slot", |g| g.reboots() == 1)
        .await;
    gw.reboot().await;
    gw.until("the reboot back", |g| g.reboots() == 2).await;
    let outcome = gw
        .outcome()
        .expect("the failure is recorded before the reboot back");
    assert_eq!(gw.boot_state("STATE_system1"), "bad");
    assert_eq!(gw.boot_state("PRIMARY"), "system0");
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unhealthy_new_slot_is_marked_bad_and_the_old_one_boots_again() {
    let mut gw = Gateway::new(false);
    let outcome = rolled_back(&mut gw).await;
    assert!(outcome.contains("health check failed"), "{outcome}");

    // The operator withdraws 2.0; the old system comes up and nothing is
    // judged or reported again.
    std::fs::remove_dir_all(gw.dir().join("firmware").join(COMPATIBLE)).unwrap();
    gw.reboot().await;
    gw.until("version 1.0 reported", |g| {
        http_get(g.port, "/status").is_some_and(|s| s.contains("\"current_version\":\"1.0\""))
    })
    .await;
    assert_eq!(gw.boot_state("CURRENT"), "system0");
    assert_eq!(gw.outcome().unwrap(), outcome, "one outcome");
    let log = gw.log();
    assert_eq!(
        log.matches("update failed: rauc: health check failed")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(gw.reboots(), 2);
}

/// Whether process `pid` still runs (a zombie is dead, only not reaped).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 2..].starts_with(['Z', 'X'])))
        .is_some_and(|zombie| !zombie)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_health_check_is_killed_with_its_group_at_its_limit() {
    let mut gw = Gateway::new(true);
    let p = gw.dir().display().to_string();
    // Forks a grandchild that would outlive a kill of the command alone, and hangs.
    write_exec(
        &gw.dir().join("health.sh"),
        &format!("echo $$ > {p}/leader\nsleep 1000 &\necho $! > {p}/grandchild\nwait\n"),
    );
    gw.health_timeout = "2s";
    gw.configure("", "");
    let outcome = rolled_back(&mut gw).await;
    assert!(
        outcome.contains("health check failed: health command: timed out after 2s"),
        "{outcome}"
    );
    let pid = |name: &str| {
        std::fs::read_to_string(gw.dir().join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let (leader, grandchild) = (pid("leader"), pid("grandchild"));
    gw.until("the health check's whole group killed", |_| {
        !running(&leader) && !running(&grandchild)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_power_cut_between_install_and_reboot_boots_the_old_system() {
    let mut gw = Gateway::new(true);
    let p = gw.dir().display().to_string();
    write_exec(
        &gw.dir().join("window.sh"),
        &format!("test -e {p}/window-open\n"),
    );
    gw.configure(
        "poll_interval = \"1s\"\n",
        &format!("policy = \"background\"\nexecutable_command = [\"{p}/window.sh\"]\n"),
    );
    let image = gw.offer("2.0", COMPATIBLE, "ca");
    gw.start_rauc().await;
    gw.start_agent();
    gw.until("the bundle installed ahead", |g| {
        !g.record()["transferred"].is_null()
    })
    .await;
    assert_eq!(&gw.slot(1)[..image.len()], &image[..]);
    assert_eq!(
        gw.boot_state("PRIMARY"),
        "system0",
        "the running slot stays primary"
    );

    gw.reboot().await;
    assert_eq!(gw.boot_state("CURRENT"), "system0", "the old system boots");
    gw.until("version 1.0 reported", |g| {
        http_get(g.port, "/status").is_some_and(|s| s.contains("\"current_version\":\"1.0\""))
    })
    .await;
    assert!(gw.outcome().is_none(), "nothing judged: {}", gw.record());
    assert_eq!(gw.reboots(), 0);

    // The maintenance window opens: the update step reboots into the new slot.
    std::fs::write(gw.dir().join("window-open"), "").unwrap();
    gw.until("the reboot into the new slot", |g| g.reboots() == 1)
        .await;
    gw.reboot().await;
    gw.until("success after the reboot", |g| {
        g.outcome().is_some_and(|o| o.contains("success"))
    })
    .await;
    assert_eq!(gw.boot_state("STATE_system1"), "good");
    gw.until("version 2.0 reported", Gateway::reported).await;
}
