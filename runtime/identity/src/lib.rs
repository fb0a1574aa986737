//! The sidecar's workload identity: its SPIFFE certificate and the roots it trusts, read from
//! the files `identity` names (the kubelet's `podCertificate` credential bundle and a PEM trust
//! bundle) or, with `identity.csr`, asked of the operator's identity endpoint for a key made in
//! memory; watched, renewed and reloaded, and the mutual TLS configs built from them — a server
//! side for listeners that requires a client certificate of the trust bundle, and a client side
//! for clusters that verifies the server's SPIFFE id. The operator's endpoint also pushes the
//! pods of meshed apps (`Discovery`), over the same kind of connection. Not for where TLS is used
//! (listeners and clusters, in the proxy core) or for how the operator signs.

mod bundle;
mod csr;
mod discovery;
mod operator;
mod spiffe;
mod store;
mod tls;

#[cfg(feature = "test-pki")]
mod test_pki;
#[cfg(feature = "test-pki")]
pub use crate::test_pki::TestCa;

pub use crate::{
    bundle::{
        BundleError, CertInfo, Credentials, TrustBundle, parse_credentials, parse_trust_bundle,
    },
    csr::{CsrClient, Issued, spiffe_id_of_token},
    discovery::{Addresses, Discovery},
    operator::OperatorError,
    spiffe::{PeerPolicy, SpiffeError, SpiffeId},
    store::{ClientTls, Identity, IdentityError, Loaded},
    tls::{BadIdentity, handshake_failure, mesh_server_name, provider},
};
