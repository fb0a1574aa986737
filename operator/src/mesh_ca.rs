//! The mesh CA: a root and an issuing intermediate (ECDSA P-256) that sign every workload's
//! SPIFFE certificate, and the trust bundle (all current roots) sidecars verify peers against.
//! Self-managed, the operator generates both once and keeps them in a Secret in its namespace
//! (`tls.crt`/`tls.key`: the issuing certificate and key, `ca.crt`: the trust bundle, `ca.key`: the
//! root key), so every replica and restart signs with the same CA, and re-issues the intermediate
//! from the root before it expires; external (cert-manager), it only reads a Secret with `tls.crt`,
//! `tls.key` and `ca.crt`. The plan (keep, re-issue, regenerate) and leaf signing are pure
//! functions of the material and the clock; the loop at the end is the thin Secret glue. Not for
//! deciding *whether* a pod gets a certificate (`signer`) or the webhook's TLS (`certs`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine as _;
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use tokio::sync::watch;
use x509_parser::{certificate::X509Certificate, oid_registry, pem::Pem, prelude::FromDer};

use crate::{
    certs::{SecretWrite, write_secret},
    names::{CA_CERT_FILE, CA_KEY_FILE, CONTROLLER_NAME, TLS_CERT_FILE, TLS_KEY_FILE},
};

const DAY: i64 = 24 * 60 * 60;
/// How long a self-managed root is valid.
pub const MESH_ROOT_VALIDITY_SECS: i64 = 10 * 365 * DAY;
/// How long a self-managed issuing (intermediate) certificate is valid.
pub const MESH_ISSUER_VALIDITY_SECS: i64 = 365 * DAY;
/// The issuing certificate is re-issued from the root this long before it expires.
pub const MESH_ISSUER_RENEW_BEFORE_SECS: i64 = 30 * DAY;
/// A new root is made this long before the current one expires (the old one stays in the bundle
/// until it expires, so peers holding certificates from it keep verifying).
pub const MESH_ROOT_RENEW_BEFORE_SECS: i64 = 180 * DAY;
/// How far a leaf's `NotBefore` is set back against clock skew between peers. The API server
/// refuses a PodCertificateRequest whose `notBefore` is 5 minutes or more away from its own clock,
/// so this stays clear of that bound.
pub const LEAF_BACKDATE_SECS: i64 = 3 * 60;

const ROOT_COMMON_NAME: &str = "outrigger-mesh-root";
const ISSUER_COMMON_NAME: &str = "outrigger-mesh-issuer";

/// Why the mesh CA could not be made, read, stored or used.
#[derive(Debug, thiserror::Error)]
pub enum MeshCaError {
    /// rcgen failed.
    #[error("cannot generate or sign a certificate")]
    Generate(#[from] rcgen::Error),
    /// A date was out of range.
    #[error("certificate validity out of range")]
    Date,
    /// A PEM or DER object did not parse.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being read (`tls.crt of Secret x`, `public key`...).
        what: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The Secret lacks a key.
    #[error("Secret {secret} has no {key}")]
    MissingKey {
        /// Namespace/name of the Secret.
        secret: String,
        /// The missing data key.
        key: &'static str,
    },
    /// The user-supplied Secret does not exist.
    #[error(
        "Secret {0} not found (external mesh CA mode: create it, e.g. with a cert-manager CA Certificate)"
    )]
    MissingSecret(String),
    /// The issuing certificate cannot sign for long enough anymore.
    #[error("the issuing certificate expires at {not_after} (unix), too soon to issue a leaf")]
    IssuerExpiring {
        /// When it expires.
        not_after: i64,
    },
    /// An API call failed.
    #[error("cannot {action}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Where the mesh CA comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MeshCaMode {
    /// The operator generates a root and an intermediate into the Secret and renews them.
    SelfManaged,
    /// The Secret is supplied (e.g. by cert-manager); the operator only reads it.
    External,
}

/// The mesh CA's material, in PEM, as the Secret holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshCaMaterial {
    /// `tls.crt`: the issuing certificate, optionally followed by further intermediates (never
    /// the root); it follows every leaf in the chain a workload gets.
    pub issuer_chain_pem: String,
    /// `tls.key`: the issuing certificate's private key (PKCS#8).
    pub issuer_key_pem: String,
    /// `ca.crt`: the trust bundle, every current root.
    pub trust_bundle_pem: String,
    /// `ca.key`: the root's private key; self-managed only.
    pub root_key_pem: Option<String>,
}

/// What to do with the material found in the Secret (self-managed mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshCaPlan {
    /// Valid for long enough.
    Keep,
    /// Re-issue the intermediate from the same root (the trust bundle stays).
    ReissueIssuer,
    /// Make a new root (keeping still-valid old roots in the bundle) and intermediate.
    NewRoot,
}

/// A certificate issued to a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// The leaf, then the issuing chain, in PEM.
    pub chain_pem: String,
    /// `NotBefore` (unix seconds).
    pub not_before: i64,
    /// `NotAfter` (unix seconds).
    pub not_after: i64,
}

/// The SPIFFE id of a workload: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Whether `s` is a valid SPIFFE trust domain name (lowercase letters, digits, `.`, `-`, `_`).
pub fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// The certificates of a PEM text, in DER, in order (non-certificate blocks are an error).
pub fn pem_certificates(what: &str, pem: &str) -> Result<Vec<Vec<u8>>, MeshCaError> {
    let invalid = |reason: String| MeshCaError::Invalid {
        what: what.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| invalid(e.to_string()))?;
        if block.label != "CERTIFICATE" {
            return Err(invalid(format!("unexpected PEM block {:?}", block.label)));
        }
        x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| invalid(format!("certificate {}: {e}", out.len() + 1)))?;
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err(invalid("no certificate".to_owned()));
    }
    Ok(out)
}

/// `NotAfter` (unix seconds) of the first certificate of a PEM text.
pub fn pem_not_after(what: &str, pem: &str) -> Result<i64, MeshCaError> {
    let ders = pem_certificates(what, pem)?;
    let first = ders.first().ok_or_else(|| MeshCaError::Invalid {
        what: what.to_owned(),
        reason: "no certificate".to_owned(),
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first).map_err(|e| MeshCaError::Invalid {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(cert.validity().not_after.timestamp())
}

/// Decides what to do with `existing` at `now` (self-managed mode). Material that does not parse
/// is regenerated.
pub fn plan_mesh_ca(existing: Option<&MeshCaMaterial>, now: i64) -> MeshCaPlan {
    let Some(m) = existing else {
        return MeshCaPlan::NewRoot;
    };
    let Some(root_key) = m.root_key_pem.as_deref() else {
        return MeshCaPlan::NewRoot;
    };
    let (Ok(root_not_after), Ok(issuer_not_after)) = (
        newest_root_not_after(&m.trust_bundle_pem),
        pem_not_after("tls.crt", &m.issuer_chain_pem),
    ) else {
        return MeshCaPlan::NewRoot;
    };
    if KeyPair::from_pem(root_key).is_err() || root_not_after - MESH_ROOT_RENEW_BEFORE_SECS <= now {
        MeshCaPlan::NewRoot
    } else if issuer_not_after - MESH_ISSUER_RENEW_BEFORE_SECS <= now
        || KeyPair::from_pem(&m.issuer_key_pem).is_err()
    {
        MeshCaPlan::ReissueIssuer
    } else {
        MeshCaPlan::Keep
    }
}

/// The root is the bundle's first certificate (a new root is put first).
fn newest_root_not_after(bundle: &str) -> Result<i64, MeshCaError> {
    pem_not_after("ca.crt", bundle)
}

/// A new self-managed CA valid from `now`: a new root first in the bundle, followed by the roots
/// of `previous` that are still valid at `now` (so workloads holding certificates from them keep
/// verifying while they roll over), and an intermediate issued from the new root.
pub fn generate_mesh_ca(
    previous: Option<&MeshCaMaterial>,
    now: i64,
) -> Result<MeshCaMaterial, MeshCaError> {
    let root_key = KeyPair::generate()?;
    let root_params = ca_params(ROOT_COMMON_NAME, 1, now, now + MESH_ROOT_VALIDITY_SECS)?;
    let root = root_params.self_signed(&root_key)?;
    let mut bundle = root.pem();
    if let Some(prev) = previous
        && let Ok(ders) = pem_certificates("ca.crt", &prev.trust_bundle_pem)
    {
        for der in ders {
            let still_valid = x509_parser::parse_x509_certificate(&der)
                .is_ok_and(|(_, c)| c.validity().not_after.timestamp() > now);
            if still_valid {
                bundle.push_str(&pem_encode("CERTIFICATE", &der));
            }
        }
    }
    let mut material = MeshCaMaterial {
        issuer_chain_pem: String::new(),
        issuer_key_pem: String::new(),
        trust_bundle_pem: bundle,
        root_key_pem: Some(root_key.serialize_pem()),
    };
    reissue_issuer(&mut material, &root.pem(), now)?;
    Ok(material)
}

/// Issues a new intermediate from the root (`root_cert_pem`, key in `material.root_key_pem`).
pub fn reissue_issuer(
    material: &mut MeshCaMaterial,
    root_cert_pem: &str,
    now: i64,
) -> Result<(), MeshCaError> {
    let root_key_pem = material
        .root_key_pem
        .as_deref()
        .ok_or(MeshCaError::MissingKey {
            secret: "(self-managed mesh CA)".to_owned(),
            key: CA_KEY_FILE,
        })?;
    let root_not_after = pem_not_after("root certificate", root_cert_pem)?;
    let root = Issuer::from_ca_cert_pem(root_cert_pem, KeyPair::from_pem(root_key_pem)?)?;
    let key = KeyPair::generate()?;
    let params = ca_params(
        ISSUER_COMMON_NAME,
        0,
        now,
        (now + MESH_ISSUER_VALIDITY_SECS).min(root_not_after),
    )?;
    let cert = params.signed_by(&key, &root)?;
    material.issuer_chain_pem = cert.pem();
    material.issuer_key_pem = key.serialize_pem();
    Ok(())
}

fn ca_params(
    common_name: &str,
    path_len: u8,
    now: i64,
    not_after: i64,
) -> Result<CertificateParams, MeshCaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "outrigger");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date(now - LEAF_BACKDATE_SECS)?;
    params.not_after = date(not_after)?;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn date(unix: i64) -> Result<OffsetDateTime, MeshCaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| MeshCaError::Date)
}

/// A positive random 16-byte serial number.
fn random_serial() -> Result<SerialNumber, MeshCaError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| MeshCaError::Invalid {
            what: "random serial number".to_owned(),
            reason: "the system random source failed".to_owned(),
        })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Why a public key cannot get a certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The DER does not parse.
    #[error("the public key does not parse: {0}")]
    Malformed(String),
    /// Not ECDSA P-256.
    #[error("{0} is not supported: only ECDSA P-256 keys are (keyType ECDSAP256)")]
    Unsupported(String),
}

/// Checks that `spki_der` is an ECDSA P-256 SubjectPublicKeyInfo, the only key type the mesh
/// issues to.
pub fn check_public_key(spki_der: &[u8]) -> Result<(), KeyError> {
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(KeyError::Malformed("trailing bytes".to_owned()));
    }
    let alg = &spki.algorithm.algorithm;
    if *alg != oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(KeyError::Unsupported(format!("key algorithm {alg}")));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(c) if c == oid_registry::OID_EC_P256 => Ok(()),
        Some(c) => Err(KeyError::Unsupported(format!("ECDSA on curve {c}"))),
        None => Err(KeyError::Unsupported(
            "ECDSA without a named curve".to_owned(),
        )),
    }
}

/// The public key (SubjectPublicKeyInfo DER) of a PKCS#10 certificate signing request. The
/// signature is checked too (the API server checks it on creation; this is cheap insurance).
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
            .map_err(|e| KeyError::Malformed(format!("certificate request: {e}")))?;
    if !rest.is_empty() {
        return Err(KeyError::Malformed(
            "certificate request: trailing bytes".to_owned(),
        ));
    }
    csr.verify_signature()
        .map_err(|e| KeyError::Malformed(format!("certificate request signature: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// A loaded mesh CA, ready to sign.
pub struct MeshCa {
    material: MeshCaMaterial,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: i64,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("issuer_not_after", &self.issuer_not_after)
            .finish_non_exhaustive()
    }
}

impl MeshCa {
    /// Loads the material: the issuing certificate must parse, its key must be a PKCS#8 key the
    /// signer supports, and the trust bundle must hold at least one certificate.
    pub fn from_material(material: MeshCaMaterial) -> Result<Self, MeshCaError> {
        pem_certificates("ca.crt (trust bundle)", &material.trust_bundle_pem)?;
        let chain = pem_certificates("tls.crt (issuing certificate)", &material.issuer_chain_pem)?;
        let first = chain.first().ok_or_else(|| MeshCaError::Invalid {
            what: "tls.crt".to_owned(),
            reason: "no certificate".to_owned(),
        })?;
        let issuer_not_after =
            pem_not_after("tls.crt (issuing certificate)", &material.issuer_chain_pem)?;
        let key =
            KeyPair::from_pem(&material.issuer_key_pem).map_err(|e| MeshCaError::Invalid {
                what: "tls.key (issuing key; PKCS#8 PEM expected)".to_owned(),
                reason: e.to_string(),
            })?;
        check_issuer_chain(&chain, &material.trust_bundle_pem)?;
        let issuer = Issuer::from_ca_cert_der(&first.as_slice().into(), key)?;
        Ok(Self {
            material,
            issuer,
            issuer_not_after,
        })
    }

    /// A new self-managed CA held in memory only (tests, and the first start before the Secret
    /// exists).
    pub fn generate(now: i64) -> Result<Self, MeshCaError> {
        Self::from_material(generate_mesh_ca(None, now)?)
    }

    /// The material (what the Secret holds).
    pub fn material(&self) -> &MeshCaMaterial {
        &self.material
    }

    /// The trust bundle (PEM roots): what sidecars verify peers against.
    pub fn trust_bundle(&self) -> &str {
        &self.material.trust_bundle_pem
    }

    /// When the issuing certificate expires (unix seconds).
    pub fn issuer_not_after(&self) -> i64 {
        self.issuer_not_after
    }

    /// Signs a leaf for `spki_der` (an ECDSA P-256 SubjectPublicKeyInfo) whose only SAN is the URI
    /// `spiffe_id`: `NotBefore` = `now` − [`LEAF_BACKDATE_SECS`], valid for `lifetime` from then
    /// (cut at the issuing certificate's expiry), digitalSignature, serverAuth + clientAuth, not a
    /// CA. Returns the leaf followed by the issuing chain.
    pub fn sign_leaf(
        &self,
        spki_der: &[u8],
        spiffe_id: &str,
        lifetime: Duration,
        now: i64,
    ) -> Result<IssuedLeaf, MeshCaError> {
        let san = SanType::URI(spiffe_id.try_into()?);
        self.sign(spki_der, vec![san], lifetime, now)
    }

    /// Signs a serving certificate for the operator's own endpoints: like [`Self::sign_leaf`],
    /// with the DNS names `dns_names` as its SANs.
    pub fn sign_server(
        &self,
        spki_der: &[u8],
        dns_names: &[String],
        lifetime: Duration,
        now: i64,
    ) -> Result<IssuedLeaf, MeshCaError> {
        let sans = dns_names
            .iter()
            .map(|n| Ok(SanType::DnsName(n.as_str().try_into()?)))
            .collect::<Result<Vec<_>, MeshCaError>>()?;
        self.sign(spki_der, sans, lifetime, now)
    }

    fn sign(
        &self,
        spki_der: &[u8],
        sans: Vec<SanType>,
        lifetime: Duration,
        now: i64,
    ) -> Result<IssuedLeaf, MeshCaError> {
        check_public_key(spki_der).map_err(|e| MeshCaError::Invalid {
            what: "public key".to_owned(),
            reason: e.to_string(),
        })?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki_der)?;
        let not_before = now - LEAF_BACKDATE_SECS;
        let lifetime = i64::try_from(lifetime.as_secs()).map_err(|_| MeshCaError::Date)?;
        let not_after = (not_before.saturating_add(lifetime)).min(self.issuer_not_after);
        if not_after <= now {
            return Err(MeshCaError::IssuerExpiring {
                not_after: self.issuer_not_after,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = date(not_before)?;
        params.not_after = date(not_after)?;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&public_key, &self.issuer)?;
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&normalize_pem(&self.material.issuer_chain_pem));
        Ok(IssuedLeaf {
            chain_pem,
            not_before,
            not_after,
        })
    }
}

/// The issuing chain must make sense to the workloads that verify against the bundle: its first
/// certificate is a CA, each certificate is signed by the next, and the last one is a root of the
/// bundle or signed by one.
fn check_issuer_chain(chain: &[Vec<u8>], bundle_pem: &str) -> Result<(), MeshCaError> {
    let invalid = |reason: &str| MeshCaError::Invalid {
        what: "tls.crt (issuing certificate)".to_owned(),
        reason: reason.to_owned(),
    };
    fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|e| e.to_string())
    }
    let certs = chain
        .iter()
        .map(|d| parse(d).map_err(|e| invalid(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let first = certs.first().ok_or_else(|| invalid("no certificate"))?;
    if !first.is_ca() {
        return Err(invalid("not a CA certificate (basicConstraints CA:TRUE)"));
    }
    for pair in certs.windows(2) {
        if let [child, parent] = pair
            && child.verify_signature(Some(parent.public_key())).is_err()
        {
            return Err(invalid("its certificates do not sign each other in order"));
        }
    }
    let roots = pem_certificates("ca.crt (trust bundle)", bundle_pem)?;
    let (Some(last), Some(last_der)) = (certs.last(), chain.last()) else {
        return Err(invalid("no certificate"));
    };
    let anchored = roots.iter().any(|r| {
        r == last_der
            || parse(r).is_ok_and(|root| last.verify_signature(Some(root.public_key())).is_ok())
    });
    if anchored {
        Ok(())
    } else {
        Err(invalid("not issued by any root in ca.crt"))
    }
}

fn normalize_pem(pem: &str) -> String {
    pem_certificates("chain", pem)
        .map(|ders| ders.iter().map(|d| pem_encode("CERTIFICATE", d)).collect())
        .unwrap_or_else(|_| pem.to_owned())
}

/// The material stored in a Secret. Self-managed material needs `ca.key`; external does not.
pub fn material_from_secret(
    secret: &Secret,
    mode: MeshCaMode,
) -> Result<MeshCaMaterial, MeshCaError> {
    let name = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let text = |key: &'static str| -> Result<Option<String>, MeshCaError> {
        match data.get(key) {
            None => Ok(None),
            Some(b) if b.0.is_empty() => Ok(None),
            Some(b) => String::from_utf8(b.0.clone())
                .map(Some)
                .map_err(|_| MeshCaError::Invalid {
                    what: format!("{key} of Secret {name}"),
                    reason: "not UTF-8 PEM".to_owned(),
                }),
        }
    };
    let required = |key: &'static str| -> Result<String, MeshCaError> {
        text(key)?.ok_or_else(|| MeshCaError::MissingKey {
            secret: name.clone(),
            key,
        })
    };
    Ok(MeshCaMaterial {
        issuer_chain_pem: required(TLS_CERT_FILE)?,
        issuer_key_pem: required(TLS_KEY_FILE)?,
        trust_bundle_pem: required(CA_CERT_FILE)?,
        root_key_pem: match mode {
            MeshCaMode::SelfManaged => Some(required(CA_KEY_FILE)?),
            MeshCaMode::External => None,
        },
    })
}

/// The Secret holding self-managed material.
pub fn material_to_secret(material: &MeshCaMaterial, name: &str, namespace: &str) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        (TLS_CERT_FILE.to_owned(), bytes(&material.issuer_chain_pem)),
        (TLS_KEY_FILE.to_owned(), bytes(&material.issuer_key_pem)),
        (CA_CERT_FILE.to_owned(), bytes(&material.trust_bundle_pem)),
    ]);
    if let Some(k) = &material.root_key_pem {
        data.insert(CA_KEY_FILE.to_owned(), bytes(k));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                CONTROLLER_NAME.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The current mesh CA as the rest of the operator sees it: `None` until it first loads. Cheap
/// to clone; every clone sees updates.
#[derive(Clone, Debug)]
pub struct MeshCaHandle {
    rx: watch::Receiver<Option<Arc<MeshCa>>>,
}

impl MeshCaHandle {
    /// A handle and the sender that updates it.
    pub fn new() -> (watch::Sender<Option<Arc<MeshCa>>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self { rx })
    }

    /// A handle that always holds `ca` (tests, in-process signers).
    pub fn fixed(ca: MeshCa) -> Self {
        let (_, rx) = watch::channel(Some(Arc::new(ca)));
        Self { rx }
    }

    /// The CA now, if loaded.
    pub fn current(&self) -> Option<Arc<MeshCa>> {
        self.rx.borrow().clone()
    }

    /// The trust bundle now, if loaded.
    pub fn trust_bundle(&self) -> Option<String> {
        self.rx
            .borrow()
            .as_ref()
            .map(|ca| ca.trust_bundle().to_owned())
    }

    /// Waits at most `timeout` for the CA to load; returns whether it has.
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let mut rx = self.rx.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await,
            Ok(Ok(_))
        )
    }

    /// Resolves after the trust bundle changed (not merely the issuing certificate); `false` once
    /// the sender is gone.
    pub async fn bundle_changed(&mut self) -> bool {
        let before = self.trust_bundle();
        loop {
            if self.rx.changed().await.is_err() {
                return false;
            }
            if self.trust_bundle() != before {
                return true;
            }
        }
    }
}

/// Keeps the mesh CA Secret valid (self-managed) or reads it (external), and publishes it.
#[derive(Clone)]
pub struct MeshCaManager {
    /// API client.
    pub client: Client,
    /// The operator's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub secret_name: String,
    /// Self-managed or external.
    pub mode: MeshCaMode,
}

impl MeshCaManager {
    /// Reads the Secret and, self-managed, creates or renews it. Safe from every replica at once:
    /// writes are optimistic and a replica that loses the race re-reads the winner's material.
    pub async fn ensure(&self, now: i64) -> Result<MeshCa, MeshCaError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let full_name = format!("{}/{}", self.namespace, self.secret_name);
        let existing =
            secrets
                .get_opt(&self.secret_name)
                .await
                .map_err(|source| MeshCaError::Api {
                    action: format!("read Secret {full_name}"),
                    source,
                })?;
        if self.mode == MeshCaMode::External {
            let secret = existing.ok_or(MeshCaError::MissingSecret(full_name))?;
            return MeshCa::from_material(material_from_secret(&secret, self.mode)?);
        }
        let found = existing
            .as_ref()
            .and_then(|s| material_from_secret(s, self.mode).ok());
        let decision = plan_mesh_ca(found.as_ref(), now);
        let material = match (decision, found) {
            (MeshCaPlan::Keep, Some(m)) => return MeshCa::from_material(m),
            (MeshCaPlan::ReissueIssuer, Some(mut m)) => {
                let root = pem_certificates("ca.crt", &m.trust_bundle_pem)?
                    .first()
                    .map(|d| pem_encode("CERTIFICATE", d))
                    .unwrap_or_default();
                reissue_issuer(&mut m, &root, now)?;
                m
            }
            (_, found) => generate_mesh_ca(found.as_ref(), now)?,
        };
        let secret = material_to_secret(&material, &self.secret_name, &self.namespace);
        let written = write_secret(&secrets, secret, existing.as_ref())
            .await
            .map_err(|source| MeshCaError::Api {
                action: format!("write Secret {full_name}"),
                source,
            })?;
        match written {
            SecretWrite::Written => {
                tracing::info!(secret = %full_name, ?decision, "mesh CA written");
                MeshCa::from_material(material)
            }
            // Another replica wrote first: use its CA.
            SecretWrite::LostRace(winner) => {
                let winner = winner.ok_or(MeshCaError::MissingSecret(full_name))?;
                MeshCa::from_material(material_from_secret(&winner, self.mode)?)
            }
        }
    }

    /// Runs [`Self::ensure`] now and then every `period` (every 10 s while it fails), publishing
    /// the CA whenever its material changes. Runs until `tx` has no receivers left.
    pub async fn run(self, period: Duration, tx: watch::Sender<Option<Arc<MeshCa>>>) {
        loop {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let wait = match self.ensure(now).await {
                Ok(ca) => {
                    let changed = tx
                        .borrow()
                        .as_ref()
                        .is_none_or(|old| old.material() != ca.material());
                    if changed {
                        tracing::info!(secret = %format!("{}/{}", self.namespace, self.secret_name), issuer_not_after = ca.issuer_not_after(), "mesh CA loaded");
                        tx.send_replace(Some(Arc::new(ca)));
                    }
                    period
                }
                Err(e) => {
                    tracing::warn!(secret = %format!("{}/{}", self.namespace, self.secret_name), error = %e, source = ?std::error::Error::source(&e), "mesh CA not ready");
                    Duration::from_secs(10)
                }
            };
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether the API server serves `certificates.k8s.io/v1beta1` `podcertificaterequests`.
pub async fn serves_pod_certificates(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("certificates.k8s.io/v1beta1")
        .await
    {
        Ok(list) => Ok(list
            .resources
            .iter()
            .any(|r| r.name == "podcertificaterequests")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use rcgen::{PKCS_ECDSA_P384_SHA384, PublicKeyData};
    use x509_parser::{
        certificate::X509Certificate, extensions::GeneralName, parse_x509_certificate,
    };

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        parse_x509_certificate(der).unwrap().1
    }

    #[test]
    fn plans() {
        let fresh = generate_mesh_ca(None, NOW).unwrap();
        let mut no_root_key = fresh.clone();
        no_root_key.root_key_pem = None;
        let mut junk = fresh.clone();
        junk.issuer_chain_pem = "junk".into();
        let cases = [
            ("no secret", None, NOW, MeshCaPlan::NewRoot),
            ("fresh", Some(&fresh), NOW, MeshCaPlan::Keep),
            (
                "issuer near expiry",
                Some(&fresh),
                NOW + MESH_ISSUER_VALIDITY_SECS - MESH_ISSUER_RENEW_BEFORE_SECS + 1,
                MeshCaPlan::ReissueIssuer,
            ),
            (
                "root near expiry",
                Some(&fresh),
                NOW + MESH_ROOT_VALIDITY_SECS - MESH_ROOT_RENEW_BEFORE_SECS + 1,
                MeshCaPlan::NewRoot,
            ),
            (
                "root key lost",
                Some(&no_root_key),
                NOW,
                MeshCaPlan::NewRoot,
            ),
            ("unparseable", Some(&junk), NOW, MeshCaPlan::NewRoot),
        ];
        for (case, existing, now, expected) in cases {
            assert_eq!(plan_mesh_ca(existing, now), expected, "{case}");
        }
    }

    #[test]
    fn renewals_keep_the_trust_bundle_and_a_new_root_keeps_the_old_one() {
        let m = generate_mesh_ca(None, NOW).unwrap();
        assert_eq!(pem_certificates("b", &m.trust_bundle_pem).unwrap().len(), 1);
        let secret = material_to_secret(&m, "outrigger-mesh-ca", "outrigger-system");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(
            material_from_secret(&secret, MeshCaMode::SelfManaged).unwrap(),
            m
        );

        let later = NOW + MESH_ISSUER_VALIDITY_SECS - MESH_ISSUER_RENEW_BEFORE_SECS + 1;
        let mut renewed = m.clone();
        let root = pem_certificates("b", &m.trust_bundle_pem).unwrap()[0].clone();
        reissue_issuer(&mut renewed, &pem_encode("CERTIFICATE", &root), later).unwrap();
        assert_eq!(renewed.trust_bundle_pem, m.trust_bundle_pem);
        assert_ne!(renewed.issuer_chain_pem, m.issuer_chain_pem);
        assert_eq!(plan_mesh_ca(Some(&renewed), later), MeshCaPlan::Keep);
        let issuer = pem_certificates("i", &renewed.issuer_chain_pem).unwrap();
        parse(&issuer[0])
            .verify_signature(Some(parse(&root).public_key()))
            .unwrap();

        let rotation = NOW + MESH_ROOT_VALIDITY_SECS - MESH_ROOT_RENEW_BEFORE_SECS + 1;
        let rotated = generate_mesh_ca(Some(&m), rotation).unwrap();
        let roots = pem_certificates("b", &rotated.trust_bundle_pem).unwrap();
        assert_eq!(roots.len(), 2, "the new root, then the old one");
        assert_eq!(roots[1], root);
        assert_ne!(roots[0], root);
        let after_old_expiry =
            generate_mesh_ca(Some(&rotated), NOW + MESH_ROOT_VALIDITY_SECS + 1).unwrap();
        assert_eq!(
            pem_certificates("b", &after_old_expiry.trust_bundle_pem)
                .unwrap()
                .len(),
            2,
            "an expired root leaves the bundle"
        );
    }

    #[test]
    fn leaf_has_only_the_spiffe_uri_and_chains_to_the_root() {
        let ca = MeshCa::generate(NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        let id = spiffe_id("cluster.local", "apps", "web");
        let leaf = ca
            .sign_leaf(
                &key.subject_public_key_info(),
                &id,
                Duration::from_secs(86_400),
                NOW,
            )
            .unwrap();
        assert_eq!(leaf.not_before, NOW - LEAF_BACKDATE_SECS);
        assert_eq!(leaf.not_after, leaf.not_before + 86_400);
        let chain = pem_certificates("chain", &leaf.chain_pem).unwrap();
        assert_eq!(chain.len(), 2, "leaf then issuer");
        let cert = parse(&chain[0]);
        assert_eq!(cert.validity().not_before.timestamp(), leaf.not_before);
        assert_eq!(cert.validity().not_after.timestamp(), leaf.not_after);
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names, vec![GeneralName::URI(id.as_str())]);
        assert!(!cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.key_encipherment());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth && !eku.code_signing);

        let issuer = parse(&chain[1]);
        let root_der = pem_certificates("b", ca.trust_bundle()).unwrap()[0].clone();
        let root = parse(&root_der);
        cert.verify_signature(Some(issuer.public_key())).unwrap();
        issuer.verify_signature(Some(root.public_key())).unwrap();
        root.verify_signature(None).unwrap();
        assert!(issuer.is_ca() && root.is_ca());
        assert_eq!(cert.issuer(), issuer.subject());
        assert!(
            cert.verify_signature(Some(root.public_key())).is_err(),
            "signed by the intermediate, not the root"
        );

        let again = ca
            .sign_leaf(
                &key.subject_public_key_info(),
                &id,
                Duration::from_secs(86_400),
                NOW + 60,
            )
            .unwrap();
        let again = pem_certificates("chain", &again.chain_pem).unwrap();
        assert_ne!(
            parse(&again[0]).raw_serial(),
            cert.raw_serial(),
            "a refresh for the same key gets a new serial"
        );
    }

    #[test]
    fn leaves_never_outlive_the_issuer_and_other_keys_are_refused() {
        let ca = MeshCa::generate(NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        let near_end = ca.issuer_not_after() - 3_600;
        let leaf = ca
            .sign_leaf(
                &key.subject_public_key_info(),
                "spiffe://cluster.local/ns/a/sa/b",
                Duration::from_secs(86_400),
                near_end,
            )
            .unwrap();
        assert_eq!(leaf.not_after, ca.issuer_not_after());
        assert!(matches!(
            ca.sign_leaf(
                &key.subject_public_key_info(),
                "spiffe://cluster.local/ns/a/sa/b",
                Duration::from_secs(86_400),
                ca.issuer_not_after() + 1,
            ),
            Err(MeshCaError::IssuerExpiring { .. })
        ));
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            check_public_key(&p384.subject_public_key_info()),
            Err(KeyError::Unsupported(_))
        ));
        assert!(matches!(
            check_public_key(b"junk"),
            Err(KeyError::Malformed(_))
        ));
        assert!(check_public_key(&key.subject_public_key_info()).is_ok());
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        assert_eq!(
            csr_public_key(csr.der()).unwrap(),
            key.subject_public_key_info()
        );
        let mut tampered = csr.der().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(csr_public_key(&tampered).is_err());
    }

    #[test]
    fn external_secrets_need_no_root_key_and_name_what_is_missing() {
        let m = generate_mesh_ca(None, NOW).unwrap();
        let mut external = material_to_secret(&m, "mesh", "ops");
        external.data.as_mut().unwrap().remove(CA_KEY_FILE);
        let loaded = material_from_secret(&external, MeshCaMode::External).unwrap();
        assert_eq!(loaded.root_key_pem, None);
        let ca = MeshCa::from_material(loaded).unwrap();
        assert_eq!(ca.trust_bundle(), m.trust_bundle_pem);
        let err = material_from_secret(&external, MeshCaMode::SelfManaged).unwrap_err();
        assert_eq!(err.to_string(), "Secret ops/mesh has no ca.key");
        external.data.as_mut().unwrap().remove(TLS_KEY_FILE);
        let err = material_from_secret(&external, MeshCaMode::External).unwrap_err();
        assert_eq!(err.to_string(), "Secret ops/mesh has no tls.key");
        let mut bad = m.clone();
        bad.issuer_key_pem = "not a key".into();
        let err = MeshCa::from_material(bad).unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
        let other = generate_mesh_ca(None, NOW).unwrap();
        let mut mixed = m.clone();
        mixed.trust_bundle_pem = other.trust_bundle_pem.clone();
        let err = MeshCa::from_material(mixed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid tls.crt (issuing certificate): not issued by any root in ca.crt"
        );
        let mut both = m.clone();
        both.trust_bundle_pem = format!("{}{}", other.trust_bundle_pem, m.trust_bundle_pem);
        assert!(
            MeshCa::from_material(both).is_ok(),
            "any root of the bundle"
        );
        let mut self_signed_root_as_issuer = m.clone();
        self_signed_root_as_issuer.issuer_chain_pem = m.trust_bundle_pem.clone();
        self_signed_root_as_issuer.issuer_key_pem = m.root_key_pem.clone().unwrap();
        assert!(
            MeshCa::from_material(self_signed_root_as_issuer).is_ok(),
            "a root may issue directly (a self-signed cert-manager CA)"
        );
    }

    #[test]
    fn spiffe_ids_and_trust_domains() {
        assert_eq!(
            spiffe_id("cluster.local", "apps", "web"),
            "spiffe://cluster.local/ns/apps/sa/web"
        );
        for (td, ok) in [
            ("cluster.local", true),
            ("prod_1.example-corp.com", true),
            ("", false),
            ("Cluster.local", false),
            ("a/b", false),
            ("a:8080", false),
        ] {
            assert_eq!(valid_trust_domain(td), ok, "{td}");
        }
    }
}
