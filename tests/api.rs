//! The server API client over TLS (tests/support/http_server.rs): a redirect from
//! https to plain http never carries the credentials, and with `https_only` it is
//! not followed at all.

mod support;

use fota_agent::api::{ApiClient, ApiError};
use fota_agent::download::DownloadConfig;
use support::http_server::*;

async fn servers() -> (TestServer, TestServer) {
    let plain = TestServer::start(ServerOptions::default()).await;
    plain.add_file("/api/state", &br#"{"ok": true}"#[..]);
    let tls = TestServer::start_tls(ServerOptions::default(), TlsSetup::server_only()).await;
    tls.add_file("/api/state", &br#"{"ok": true}"#[..]);
    tls.set_faults(
        "/api/moved",
        Faults::new().redirect(302, plain.url("/api/state")),
    );
    (tls, plain)
}

fn client(tls: &TestServer, https_only: bool) -> ApiClient {
    let download = DownloadConfig {
        ca_bundle: Some(tls.tls_files().ca_cert.clone()),
        https_only,
        ..DownloadConfig::default()
    };
    ApiClient::new(&download, &tls.base_url())
        .unwrap()
        .credential("Authorization", "TargetToken secret-1")
        .unwrap()
}

#[tokio::test]
async fn a_downgrade_to_http_gets_no_credentials() {
    let (tls, plain) = servers().await;
    let api = client(&tls, false);
    let answer: serde_json::Value = api
        .get(&tls.url("/api/state"))
        .credential("deviceKey", "key-2")
        .fetch_json()
        .await
        .unwrap();
    assert_eq!(answer["ok"], true);
    let direct = &tls.requests("/api/state")[0];
    assert_eq!(direct.header("authorization"), Some("TargetToken secret-1"));
    assert_eq!(direct.header("devicekey"), Some("key-2"));

    api.get(&tls.url("/api/moved"))
        .credential("deviceKey", "key-2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tls.requests("/api/moved")[0].header("devicekey"),
        Some("key-2")
    );
    let downgraded = &plain.requests("/api/state")[0];
    assert_eq!(downgraded.header("authorization"), None);
    assert_eq!(downgraded.header("devicekey"), None);
}

#[tokio::test]
async fn https_only_refuses_a_redirect_to_http() {
    let (tls, plain) = servers().await;
    let err = client(&tls, true)
        .get(&tls.url("/api/moved"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Request { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("https_only"), "{err}");
    assert_eq!(plain.request_count("/api/state"), 0);
}
