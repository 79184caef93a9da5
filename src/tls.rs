//! The one TLS crypto provider: ring. reqwest is built without a provider of its
//! own (it would link aws-lc beside ring, about 2 MB), so every HTTP client is
//! made after [`install_ring`] set ring as the process default.

/// Makes ring the process-wide rustls provider; idempotent, and harmless when a
/// provider is already installed (tests may install ring themselves).
pub fn install_ring() {
    // `Err` only means a default exists already; either way one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
