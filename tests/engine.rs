//! The engine end to end over a real directory source, real files in a real state
//! directory, and in-process fake devices.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use fota_agent::model::{FirmwareLocation, FirmwareStatus, UpdatePolicy};
use fota_agent::progress::{Outcome, ProgressKind, ProgressStep::*};
use fota_agent::source::CancelOutcome;

#[tokio::test]
async fn immediate_device_goes_downloading_transferring_updating() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let content = vec![7u8; 200_000];
    offer(fw.path(), "sensor", "1.1", b"old", "");
    offer(
        fw.path(),
        "sensor",
        "2.0",
        &content,
        &format!("md5Hash = {}\n", md5_hex(&content)),
    );
    let dev = FakeDevice::new("1.0");
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("s1", "sensor", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let mut rx = engine.subscribe();

    let results = engine.run_once().await;

    assert_eq!(results[0].outcome, Some(Outcome::Success));
    assert_eq!(results[0].version.as_deref(), Some("2.0"));
    assert_eq!(results[0].status, FirmwareStatus::UpdateExecutable);
    assert_eq!(dev.version().as_deref(), Some("2.0"));
    assert_eq!(*dev.received.lock().unwrap(), content);
    let kinds = drain(&mut rx);
    assert_eq!(
        steps_only(&kinds),
        vec![
            ProgressKind::Sequence(vec![Downloading, Transferring, Updating]),
            ProgressKind::Step(Downloading),
            ProgressKind::Step(Transferring),
            ProgressKind::Step(Updating),
            ProgressKind::Finished(Outcome::Success),
        ]
    );
    assert!(kinds.contains(&ProgressKind::Percent(Downloading, 100)));
    assert!(kinds.contains(&ProgressKind::Percent(Updating, 50)));
    let st = engine.store().load("s1").unwrap();
    assert_eq!(st.last_outcome.unwrap().outcome, Outcome::Success);
    assert_eq!(st.in_flight, None);
    // The staged image is removed once the update is done.
    assert_eq!(
        std::fs::read_dir(engine.store().downloads_dir())
            .unwrap()
            .count(),
        0
    );

    // Up to date now: a second cycle does nothing.
    let again = engine.run_once().await;
    assert_eq!(again[0].status, FirmwareStatus::UpToDate);
    assert_eq!(again[0].outcome, None);
    assert_eq!(dev.updates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn background_device_transfers_first_and_updates_when_executable() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "valve", "3.0", b"valve firmware 3.0", "");
    let dev = FakeDevice::build("2.9", true, None);
    dev.executable.store(false, Ordering::SeqCst);
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("v1", "valve", UpdatePolicy::Background),
            dev.clone(),
        )],
    );
    let mut rx = engine.subscribe();

    let first = engine.run_once().await;
    assert_eq!(first[0].status, FirmwareStatus::UpdateAvailable);
    assert_eq!(first[0].outcome, None, "transferred, update pending");
    assert_eq!(dev.transfers.load(Ordering::SeqCst), 1);
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert_eq!(
        steps_only(&drain(&mut rx)),
        vec![
            ProgressKind::Sequence(vec![Downloading, Transferring]),
            ProgressKind::Step(Downloading),
            ProgressKind::Step(Transferring),
            ProgressKind::Pending,
        ]
    );
    let staged = engine.store().load("v1").unwrap().transferred.unwrap();
    assert_eq!(staged.version, "3.0");

    // Still not executable: nothing happens, no second transfer.
    engine.run_once().await;
    assert_eq!(dev.transfers.load(Ordering::SeqCst), 1);
    assert!(drain(&mut rx).is_empty());

    dev.executable.store(true, Ordering::SeqCst);
    let third = engine.run_once().await;
    assert_eq!(third[0].status, FirmwareStatus::UpdateExecutable);
    assert_eq!(third[0].outcome, Some(Outcome::Success));
    assert_eq!(dev.transfers.load(Ordering::SeqCst), 1);
    assert_eq!(dev.updates.load(Ordering::SeqCst), 1);
    assert_eq!(
        steps_only(&drain(&mut rx)),
        vec![
            ProgressKind::Sequence(vec![Updating]),
            ProgressKind::Step(Updating),
            ProgressKind::Finished(Outcome::Success),
        ]
    );
    assert_eq!(dev.version().as_deref(), Some("3.0"));
    assert_eq!(engine.store().load("v1").unwrap().transferred, None);
}

/// An image larger than the device takes fails before anything is fetched or
/// sent; one of exactly the limit goes through.
#[tokio::test]
async fn an_image_over_the_devices_limit_is_refused_before_the_transfer() {
    for (limit, fits) in [(9, false), (10, true)] {
        let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        offer(fw.path(), "sensor", "2.0", b"0123456789", "");
        let dev = FakeDevice::new("1.0");
        *dev.image_limit.lock().unwrap() = Some(limit);
        let config = device_config("s1", "sensor", UpdatePolicy::Immediate);
        let engine = engine(state.path(), fw.path(), vec![(config, dev.clone())]);
        let results = engine.run_once().await;
        if fits {
            assert_eq!(results[0].outcome, Some(Outcome::Success), "{results:?}");
            continue;
        }
        let Some(Outcome::Failed(reason)) = &results[0].outcome else {
            panic!("expected a failure, got {results:?}");
        };
        let expected = "image of 10 bytes does not fit the device (9 bytes at most)";
        assert!(reason.contains(expected), "{reason}");
        assert_eq!(dev.transfers.load(Ordering::SeqCst), 0);
        assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn checksum_mismatch_fails_before_the_handler_runs() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wrong = "0123456789abcdef0123456789abcdef";
    offer(
        fw.path(),
        "sensor",
        "2.0",
        b"payload",
        &format!("md5Hash = {wrong}\n"),
    );
    let dev = FakeDevice::new("1.0");
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("s1", "sensor", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let mut rx = engine.subscribe();

    let results = engine.run_once().await;

    let Some(Outcome::Failed(reason)) = &results[0].outcome else {
        panic!("expected failure, got {:?}", results[0].outcome);
    };
    assert!(reason.contains("MD5 mismatch"), "{reason}");
    assert!(reason.contains(wrong), "{reason}");
    assert!(reason.contains(&md5_hex(b"payload")), "{reason}");
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert_eq!(dev.version().as_deref(), Some("1.0"));
    assert_eq!(
        std::fs::read_dir(engine.store().downloads_dir())
            .unwrap()
            .count(),
        0
    );
    let kinds = drain(&mut rx);
    assert!(matches!(
        kinds.last(),
        Some(ProgressKind::Finished(Outcome::Failed(_)))
    ));
    assert!(!kinds.contains(&ProgressKind::Step(Transferring)));
    let st = engine.store().load("s1").unwrap();
    assert!(matches!(
        st.last_outcome.unwrap().outcome,
        Outcome::Failed(_)
    ));
    assert_eq!(st.in_flight, None);
}

#[tokio::test]
async fn older_firmware_and_unmet_prerequisites_are_refused() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "old", "1.0", b"a", "");
    offer(fw.path(), "pre", "3.0", b"b", "prerequisiteVersion = 2.5\n");
    let downgrade_target = FakeDevice::new("2.0");
    let needs_prereq = FakeDevice::new("2.0");
    let engine = engine(
        state.path(),
        fw.path(),
        vec![
            (
                device_config("d1", "old", UpdatePolicy::Immediate),
                downgrade_target.clone(),
            ),
            (
                device_config("d2", "pre", UpdatePolicy::Immediate),
                needs_prereq.clone(),
            ),
        ],
    );

    let reports = engine.check().await;
    assert_eq!(reports[0].status, FirmwareStatus::UpToDate);
    assert_eq!(reports[0].selection.candidate, None);
    assert_eq!(reports[1].status, FirmwareStatus::UpToDate);
    let (version, reason) = &reports[1].selection.refused[0];
    assert_eq!(version, "3.0");
    assert!(reason.contains("2.5"), "{reason}");

    let results = engine.run_once().await;
    assert!(results.iter().all(|r| r.outcome.is_none()));
    assert_eq!(downgrade_target.updates.load(Ordering::SeqCst), 0);
    assert_eq!(needs_prereq.updates.load(Ordering::SeqCst), 0);

    // Once the prerequisite is met, the same firmware is taken.
    *needs_prereq.version.lock().unwrap() = Some("2.5".into());
    let results = engine.run_once().await;
    assert_eq!(results[1].outcome, Some(Outcome::Success));
}

#[tokio::test]
async fn firmware_for_another_type_never_reaches_the_device() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let image = offer(fw.path(), "other-type", "9.0", b"not for you", "");
    let dev = FakeDevice::new("1.0");
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("s1", "sensor", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    assert_eq!(engine.check().await[0].status, FirmwareStatus::Unknown);
    // Even installed by hand, the verified image is for the device's own type only,
    // and a version rule refusal stops it before any byte moves.
    let outcome = engine
        .install(
            "s1",
            FirmwareLocation::File(image.clone()),
            Some("0.5"),
            vec![],
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Failed(ref r) if r.contains("not newer")),
        "{outcome:?}"
    );
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn update_running_past_the_timeout_fails_and_cancels_the_handler() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "slow", "2.0", b"slow firmware", "");
    let dev = FakeDevice::build("1.0", false, Some(Duration::from_secs(3 * 3600)));
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("s1", "slow", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let mut rx = engine.subscribe();
    let started = tokio::time::Instant::now();

    let results = engine.run_once().await;

    let Some(Outcome::Failed(reason)) = &results[0].outcome else {
        panic!("expected failure, got {:?}", results[0].outcome);
    };
    assert!(reason.contains("timed out after 30m"), "{reason}");
    assert!(reason.contains("UPDATING"), "{reason}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30 * 60) && elapsed < Duration::from_secs(31 * 60),
        "{elapsed:?}"
    );
    assert_eq!(dev.cancels.load(Ordering::SeqCst), 1);
    assert_eq!(dev.version().as_deref(), Some("1.0"));
    let finished: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter(|k| matches!(k, ProgressKind::Finished(_)))
        .collect();
    assert_eq!(finished.len(), 1, "exactly one terminal outcome");
}

#[tokio::test]
async fn cancel_is_refused_once_the_update_step_writes_the_device() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "slow", "2.0", b"slow firmware", "");
    let dev = FakeDevice::build("1.0", false, Some(Duration::from_millis(300)));
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("s1", "slow", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let mut rx = engine.subscribe();
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_once().await }
    });
    // Wait until the handler's update step runs, then cancel.
    loop {
        match rx.recv().await.unwrap().kind {
            ProgressKind::Percent(Updating, _) => break,
            _ => continue,
        }
    }
    // The update step writes the device: past the point of no return.
    assert_eq!(engine.cancel("s1"), CancelOutcome::TooLate);
    let results = runner.await.unwrap();
    assert_eq!(results[0].outcome, Some(Outcome::Success));
    assert_eq!(dev.cancels.load(Ordering::SeqCst), 0);
    assert_eq!(engine.cancel("s1"), CancelOutcome::NotRunning);
}

#[tokio::test]
async fn cancel_stops_a_transfer_in_progress() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "slow", "2.0", b"slow firmware", "");
    let dev = FakeDevice::build("1.0", true, None);
    dev.transfer_takes(Duration::from_secs(3600));
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("s1", "slow", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let mut rx = engine.subscribe();
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_once().await }
    });
    loop {
        if let ProgressKind::Percent(Transferring, _) = rx.recv().await.unwrap().kind {
            break;
        }
    }
    assert_eq!(engine.cancel("s1"), CancelOutcome::Canceled);
    let results = runner.await.unwrap();
    assert_eq!(results[0].outcome, Some(Outcome::Canceled));
    assert_eq!(dev.cancels.load(Ordering::SeqCst), 1);
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert_eq!(dev.version().as_deref(), Some("1.0"));
}

#[tokio::test]
async fn updates_never_exceed_max_concurrent() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "t", "2.0", b"firmware", "");
    let devices: Vec<_> = (0..4)
        .map(|i| {
            (
                device_config(&format!("d{i}"), "t", UpdatePolicy::Immediate),
                FakeDevice::build("1.0", false, Some(Duration::from_millis(50))),
            )
        })
        .collect();
    let mut agent = agent_config(state.path());
    agent.max_concurrent_updates = 2;
    let engine = engine_with(agent, fw.path(), devices.clone());
    let mut rx = engine.subscribe();
    let results = engine.run_once().await;
    assert!(results.iter().all(|r| r.outcome == Some(Outcome::Success)));
    // Replay the event stream: count updates between their first event and the end.
    let (mut running, mut peak) = (0i32, 0i32);
    while let Ok(ev) = rx.try_recv() {
        match ev.kind {
            ProgressKind::Sequence(_) => running += 1,
            ProgressKind::Finished(_) => running -= 1,
            _ => {}
        }
        peak = peak.max(running);
    }
    assert_eq!(peak, 2);
}

/// Adds `image2` (the second file of a two-image firmware) to the offer of
/// `version` written by `offer`.
fn add_image2(
    root: &std::path::Path,
    device_type: &str,
    version: &str,
    content: &[u8],
    extra: &str,
) {
    let dir = root.join(device_type);
    std::fs::write(dir.join(format!("fw-{version}-2.bin")), content).unwrap();
    let props = dir.join(format!("fw-{version}.properties"));
    let mut text = std::fs::read_to_string(&props).unwrap();
    text.push_str(&format!("image2 = fw-{version}-2.bin\n{extra}"));
    std::fs::write(props, text).unwrap();
}

#[tokio::test]
async fn a_bad_second_image_fails_the_pair_before_the_handler_runs() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "esp", "2.0", b"user1", "");
    let wrong = "0123456789abcdef0123456789abcdef";
    add_image2(
        fw.path(),
        "esp",
        "2.0",
        b"user2",
        &format!("md5Hash2 = {wrong}\n"),
    );
    let dev = FakeDevice::new("1.0");
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("e1", "esp", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let results = engine.run_once().await;
    let reason = failure(results[0].outcome.as_ref().unwrap());
    assert!(
        reason.contains("MD5 mismatch") && reason.contains(&md5_hex(b"user2")),
        "{reason}"
    );
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    let left = std::fs::read_dir(engine.store().downloads_dir())
        .unwrap()
        .count();
    assert_eq!(left, 0, "neither file of the pair is kept");
}

#[tokio::test]
async fn a_staged_pair_is_rechecked_file_by_file_before_its_update() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offer(fw.path(), "esp", "3.0", b"user1 of 3.0", "");
    add_image2(fw.path(), "esp", "3.0", b"user2 of 3.0", "");
    let dev = FakeDevice::build("2.0", true, None);
    dev.executable.store(false, Ordering::SeqCst);
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("e1", "esp", UpdatePolicy::Background),
            dev.clone(),
        )],
    );
    engine.run_once().await;
    let staged = engine.store().load("e1").unwrap().transferred.unwrap();
    assert_eq!(staged.parts.len(), 1);
    assert_eq!(staged.parts[0].name, "image2");
    let part = engine.store().downloads_dir().join("e1.image2.img");
    assert_eq!(std::fs::read(&part).unwrap(), b"user2 of 3.0");
    std::fs::write(&part, b"user2 changed").unwrap();

    dev.executable.store(true, Ordering::SeqCst);
    let results = engine.run_once().await;
    let reason = failure(results[0].outcome.as_ref().unwrap());
    assert!(
        reason.contains("SHA-256") && reason.contains("mismatch"),
        "{reason}"
    );
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert!(
        !part.exists(),
        "the staged files are removed with the failed update"
    );
}
