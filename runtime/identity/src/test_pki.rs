//! A throwaway PKI for tests (feature `test-pki`): a root CA that issues SPIFFE certificates
//! (ECDSA P-256, the URI SAN only, serverAuth and clientAuth) and writes credential bundles in
//! the kubelet's format. Never built into the sidecar.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A root CA.
pub struct TestCa {
    /// The root certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new root named `name`.
    ///
    /// # Panics
    /// When rcgen fails (a test setup error).
    #[allow(clippy::expect_used)]
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let cert = params.self_signed(&key).expect("root");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A credential bundle (key, then leaf) for `uris`, valid now for a day.
    pub fn bundle(&self, uris: &[&str]) -> String {
        let now = OffsetDateTime::now_utc();
        self.bundle_valid(uris, now - Duration::minutes(5), now + Duration::days(1))
    }

    /// A credential bundle (key, then leaf) for `uris`, valid between the two times.
    ///
    /// # Panics
    /// When rcgen fails (a test setup error).
    #[allow(clippy::expect_used)]
    pub fn bundle_valid(
        &self,
        uris: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> String {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().expect("an IA5 URI")))
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        format!("{}{}", key.serialize_pem(), cert.pem())
    }
}
