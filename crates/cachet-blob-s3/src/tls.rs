//! TLS without aws-lc: rustls with the *ring* crypto provider.
//!
//! object_store's `aws` feature pulls aws-lc-rs (a C library, minutes of compile time). This
//! crate instead enables object_store's `aws-base` + `ring` features (request signing with
//! ring) and reqwest's `rustls-no-provider` feature, and installs rustls's ring provider as
//! the process default before the first client is built. reqwest uses the process default
//! when one is installed, and would panic without one.

/// Installs rustls's ring provider as the process-wide default, unless the application
/// already installed one (then that one is used, whatever it is).
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
