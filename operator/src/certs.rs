//! Self-managed webhook TLS: a CA and a serving certificate for the webhook Service, kept in a
//! Secret so every replica and every restart serves the same certificate, written to the cert
//! directory (which `tls` watches), with the CA patched into the webhook configurations'
//! `caBundle`. The serving certificate is re-issued from the same CA before it expires, so the
//! `caBundle` rarely changes. The plan (keep, renew, regenerate) is a pure function of the Secret
//! and the clock. Not used with `--cert-mode external` (cert-manager).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;
use time::OffsetDateTime;

use crate::names::{CA_CERT_FILE, CA_KEY_FILE, FIELD_MANAGER, TLS_CERT_FILE, TLS_KEY_FILE};

const DAY: i64 = 24 * 60 * 60;
/// How long the CA is valid.
pub(crate) const CA_VALIDITY_SECS: i64 = 10 * 365 * DAY;
/// How long a serving certificate is valid.
pub(crate) const CERT_VALIDITY_SECS: i64 = 365 * DAY;
/// A serving certificate is re-issued this long before it expires.
pub(crate) const RENEW_BEFORE_SECS: i64 = 30 * DAY;
/// The CA is regenerated this long before it expires.
pub(crate) const CA_RENEW_BEFORE_SECS: i64 = 90 * DAY;

const ANNOTATION_CA_NOT_AFTER: &str = "outrigger.dev/ca-not-after";
const ANNOTATION_CERT_NOT_AFTER: &str = "outrigger.dev/cert-not-after";
const ANNOTATION_DNS_NAMES: &str = "outrigger.dev/dns-names";
const CA_COMMON_NAME: &str = "outrigger-webhook-ca";

/// Why certificates could not be made or stored.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("cannot generate a certificate")]
    Generate(#[from] rcgen::Error),
    /// A date was out of range.
    #[error("certificate validity out of range")]
    Date,
    /// An API call failed.
    #[error("cannot {action}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the cert directory failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A CA and the serving certificate it issued, in PEM, with their expiry (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    /// CA certificate (what goes into `caBundle`).
    pub ca_cert_pem: String,
    /// CA private key.
    pub ca_key_pem: String,
    /// Serving certificate.
    pub cert_pem: String,
    /// Serving private key.
    pub key_pem: String,
    /// When the CA expires.
    pub ca_not_after: i64,
    /// When the serving certificate expires.
    pub cert_not_after: i64,
    /// The DNS names in the serving certificate.
    pub dns_names: Vec<String>,
}

/// What to do with the certificates found in the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Valid for long enough, for the right names.
    Keep,
    /// Re-issue the serving certificate from the same CA (the `caBundle` stays).
    RenewServing,
    /// Make a new CA and serving certificate.
    Regenerate,
}

/// The names the API server uses to reach `service` in `namespace`.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Decides what to do with `existing` at `now` for the wanted names.
pub fn plan(existing: Option<&CertBundle>, names: &[String], now: i64) -> Plan {
    let Some(b) = existing else {
        return Plan::Regenerate;
    };
    if b.ca_not_after - CA_RENEW_BEFORE_SECS <= now {
        Plan::Regenerate
    } else if b.cert_not_after - RENEW_BEFORE_SECS <= now || b.dns_names != names {
        Plan::RenewServing
    } else {
        Plan::Keep
    }
}

/// A new CA and a serving certificate for `names`, valid from `now`.
pub fn generate(names: &[String], now: i64) -> Result<CertBundle, CertError> {
    let ca_key = KeyPair::generate()?;
    let ca_not_after = now + CA_VALIDITY_SECS;
    let ca_params = ca_params(now, ca_not_after)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let mut bundle = CertBundle {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        cert_pem: String::new(),
        key_pem: String::new(),
        ca_not_after,
        cert_not_after: 0,
        dns_names: Vec::new(),
    };
    issue_serving(&mut bundle, names, now)?;
    Ok(bundle)
}

/// Re-issues the bundle's serving certificate from its CA.
pub fn issue_serving(bundle: &mut CertBundle, names: &[String], now: i64) -> Result<(), CertError> {
    let ca_key = KeyPair::from_pem(&bundle.ca_key_pem)?;
    // The issuer is the CA's name and key; the certificate it signs verifies against the CA
    // certificate in the Secret (same subject, same key identifier).
    let issuer = Issuer::new(ca_params(now, bundle.ca_not_after)?, ca_key);
    let key = KeyPair::generate()?;
    let cert_not_after = (now + CERT_VALIDITY_SECS).min(bundle.ca_not_after);
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = names.get(2).or(names.first()) {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = date(now - 300)?;
    params.not_after = date(cert_not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    bundle.cert_pem = cert.pem();
    bundle.key_pem = key.serialize_pem();
    bundle.cert_not_after = cert_not_after;
    bundle.dns_names = names.to_vec();
    Ok(())
}

fn ca_params(now: i64, not_after: i64) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "outrigger");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date(now - 300)?;
    params.not_after = date(not_after)?;
    Ok(params)
}

fn date(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CertError::Date)
}

/// The bundle stored in a Secret by [`to_secret`], if it is complete.
pub fn from_secret(secret: &Secret) -> Option<CertBundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let annotations = secret.metadata.annotations.as_ref()?;
    let number = |k: &str| annotations.get(k).and_then(|v| v.parse::<i64>().ok());
    Some(CertBundle {
        ca_cert_pem: text(CA_CERT_FILE)?,
        ca_key_pem: text(CA_KEY_FILE)?,
        cert_pem: text(TLS_CERT_FILE)?,
        key_pem: text(TLS_KEY_FILE)?,
        ca_not_after: number(ANNOTATION_CA_NOT_AFTER)?,
        cert_not_after: number(ANNOTATION_CERT_NOT_AFTER)?,
        dns_names: annotations
            .get(ANNOTATION_DNS_NAMES)?
            .split(',')
            .map(str::to_owned)
            .collect(),
    })
}

/// A `kubernetes.io/tls` Secret holding the bundle.
pub fn to_secret(bundle: &CertBundle, name: &str, namespace: &str) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                crate::names::CONTROLLER_NAME.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (
                    ANNOTATION_CA_NOT_AFTER.to_owned(),
                    bundle.ca_not_after.to_string(),
                ),
                (
                    ANNOTATION_CERT_NOT_AFTER.to_owned(),
                    bundle.cert_not_after.to_string(),
                ),
                (ANNOTATION_DNS_NAMES.to_owned(), bundle.dns_names.join(",")),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (TLS_CERT_FILE.to_owned(), bytes(&bundle.cert_pem)),
            (TLS_KEY_FILE.to_owned(), bytes(&bundle.key_pem)),
            (CA_CERT_FILE.to_owned(), bytes(&bundle.ca_cert_pem)),
            (CA_KEY_FILE.to_owned(), bytes(&bundle.ca_key_pem)),
        ])),
        ..Secret::default()
    }
}

/// Writes `tls.crt` and `tls.key` into `dir` (each through a temporary file and a rename).
pub fn write_cert_dir(dir: &Path, bundle: &CertBundle) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for (file, content) in [
        (TLS_KEY_FILE, &bundle.key_pem),
        (TLS_CERT_FILE, &bundle.cert_pem),
    ] {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).is_ok_and(|c| &c == content) {
            continue;
        }
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| CertError::Write { path, source })?;
    }
    Ok(())
}

/// Everything the self-managed certificate loop needs.
#[derive(Clone)]
pub struct SelfManaged {
    /// API client.
    pub client: Client,
    /// The operator's namespace.
    pub namespace: String,
    /// The webhook Service name.
    pub service_name: String,
    /// The Secret holding the bundle.
    pub secret_name: String,
    /// MutatingWebhookConfiguration to patch.
    pub mutating_webhook_name: String,
    /// ValidatingWebhookConfiguration to patch.
    pub validating_webhook_name: String,
    /// Where `tls.crt` and `tls.key` are written.
    pub cert_dir: PathBuf,
}

/// How an optimistic write of a Secret ended.
pub(crate) enum SecretWrite {
    /// This replica's Secret is stored.
    Written,
    /// Another writer got there first; its Secret, as read back.
    LostRace(Option<Box<Secret>>),
}

/// Creates `secret`, or replaces `existing` at the resource version it was read at, so two
/// replicas never overwrite each other: on a conflict the winner's Secret is read back.
pub(crate) async fn write_secret(
    secrets: &Api<Secret>,
    mut secret: Secret,
    existing: Option<&Secret>,
) -> Result<SecretWrite, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let written = match existing {
        None => secrets.create(&PostParams::default(), &secret).await,
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version.clone();
            secrets
                .replace(&name, &PostParams::default(), &secret)
                .await
        }
    };
    match written {
        Ok(_) => Ok(SecretWrite::Written),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(SecretWrite::LostRace(
            secrets.get_opt(&name).await?.map(Box::new),
        )),
        Err(e) => Err(e),
    }
}

impl SelfManaged {
    /// Makes sure the Secret holds a valid bundle, writes the cert directory and patches the
    /// `caBundle`s. Safe to run from every replica at once: Secret writes are optimistic, and a
    /// replica that loses the race uses the winner's bundle.
    /// Returns the bundle and whether every webhook configuration now carries its CA.
    pub async fn ensure(&self, now: i64) -> Result<(CertBundle, bool), CertError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let api_err = |action: &str| {
            let action = action.to_owned();
            move |source| CertError::Api { action, source }
        };
        let existing = secrets
            .get_opt(&self.secret_name)
            .await
            .map_err(api_err(&format!("read Secret {}", self.secret_name)))?;
        let found = existing.as_ref().and_then(from_secret);
        let names = dns_names(&self.service_name, &self.namespace);
        let decision = plan(found.as_ref(), &names, now);
        let bundle = match (decision, found) {
            (Plan::Keep, Some(b)) => b,
            (decision, found) => {
                let bundle = match (decision, found) {
                    (Plan::RenewServing, Some(mut b)) => {
                        issue_serving(&mut b, &names, now)?;
                        b
                    }
                    _ => generate(&names, now)?,
                };
                let secret = to_secret(&bundle, &self.secret_name, &self.namespace);
                match write_secret(&secrets, secret, existing.as_ref())
                    .await
                    .map_err(api_err(&format!("write Secret {}", self.secret_name)))?
                {
                    SecretWrite::Written => {
                        tracing::info!(secret = %self.secret_name, ?decision, "webhook certificate written");
                        bundle
                    }
                    // Another replica wrote first: use its bundle.
                    SecretWrite::LostRace(winner) => {
                        winner.as_deref().and_then(from_secret).unwrap_or(bundle)
                    }
                }
            }
        };
        write_cert_dir(&self.cert_dir, &bundle)?;
        let in_sync = self.patch_ca_bundles(&bundle.ca_cert_pem).await;
        Ok((bundle, in_sync))
    }

    /// Patches `caBundle` into every webhook of both configurations that does not have it yet.
    /// A missing configuration is logged (the chart may not have created it yet) and retried later.
    /// Returns whether both configurations carry the CA now.
    async fn patch_ca_bundles(&self, ca_pem: &str) -> bool {
        let mut in_sync = true;
        let ca = ByteString(ca_pem.as_bytes().to_vec());
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let current_m = mutating
            .get_opt(&self.mutating_webhook_name)
            .await
            .map(|c| {
                c.map(|c| {
                    c.webhooks
                        .unwrap_or_default()
                        .into_iter()
                        .map(|w| w.client_config.ca_bundle)
                        .collect::<Vec<_>>()
                })
            });
        let current_v = validating
            .get_opt(&self.validating_webhook_name)
            .await
            .map(|c| {
                c.map(|c| {
                    c.webhooks
                        .unwrap_or_default()
                        .into_iter()
                        .map(|w| w.client_config.ca_bundle)
                        .collect::<Vec<_>>()
                })
            });
        for (kind, name, current) in [
            (
                "MutatingWebhookConfiguration",
                &self.mutating_webhook_name,
                current_m,
            ),
            (
                "ValidatingWebhookConfiguration",
                &self.validating_webhook_name,
                current_v,
            ),
        ] {
            let bundles = match current {
                Ok(Some(b)) => b,
                Ok(None) => {
                    tracing::warn!(kind, name = %name, "webhook configuration not found; caBundle not patched yet");
                    in_sync = false;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(kind, name = %name, error = %e, "cannot read webhook configuration");
                    in_sync = false;
                    continue;
                }
            };
            let Some(patch) = ca_bundle_patch(&bundles, &ca) else {
                continue;
            };
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            let result = if kind.starts_with("Mutating") {
                mutating
                    .patch(name, &params, &Patch::<()>::Json(patch))
                    .await
                    .map(|_| ())
            } else {
                validating
                    .patch(name, &params, &Patch::<()>::Json(patch))
                    .await
                    .map(|_| ())
            };
            match result {
                Ok(()) => tracing::info!(kind, name = %name, "caBundle patched"),
                Err(e) => {
                    tracing::warn!(kind, name = %name, error = %e, "cannot patch caBundle");
                    in_sync = false;
                }
            }
        }
        in_sync
    }

    /// Runs [`Self::ensure`] now and then every `period`; failures — including a webhook
    /// configuration still without the CA — are logged and retried after 10 s.
    pub async fn run(self, period: Duration, on_ready: impl Fn()) {
        loop {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let wait = match self.ensure(now).await {
                Ok((_, in_sync)) => {
                    // The certificate is on disk: this replica can serve the webhook.
                    on_ready();
                    if in_sync {
                        period
                    } else {
                        Duration::from_secs(10)
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "webhook certificate not ready");
                    Duration::from_secs(10)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A JSON patch setting `caBundle` on every webhook whose bundle differs, or `None` if all match.
pub fn ca_bundle_patch(
    current: &[Option<ByteString>],
    ca: &ByteString,
) -> Option<json_patch::Patch> {
    let ops: Vec<serde_json::Value> = current
        .iter()
        .enumerate()
        .filter(|(_, b)| b.as_ref() != Some(ca))
        .map(|(i, _)| json!({ "op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": ca }))
        .collect();
    if ops.is_empty() {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn bundle(ca_left: i64, cert_left: i64, names: &[String]) -> CertBundle {
        CertBundle {
            ca_cert_pem: String::new(),
            ca_key_pem: String::new(),
            cert_pem: String::new(),
            key_pem: String::new(),
            ca_not_after: NOW + ca_left,
            cert_not_after: NOW + cert_left,
            dns_names: names.to_vec(),
        }
    }

    #[test]
    fn plans() {
        let names = dns_names("outrigger-webhook", "outrigger-system");
        let other = dns_names("renamed", "outrigger-system");
        let cases = [
            ("no secret", None, Plan::Regenerate),
            (
                "fresh",
                Some(bundle(CA_VALIDITY_SECS, CERT_VALIDITY_SECS, &names)),
                Plan::Keep,
            ),
            (
                "serving cert near expiry",
                Some(bundle(CA_VALIDITY_SECS, RENEW_BEFORE_SECS - 1, &names)),
                Plan::RenewServing,
            ),
            (
                "serving cert expired",
                Some(bundle(CA_VALIDITY_SECS, -5, &names)),
                Plan::RenewServing,
            ),
            (
                "service renamed",
                Some(bundle(CA_VALIDITY_SECS, CERT_VALIDITY_SECS, &other)),
                Plan::RenewServing,
            ),
            (
                "CA near expiry",
                Some(bundle(CA_RENEW_BEFORE_SECS - 1, CERT_VALIDITY_SECS, &names)),
                Plan::Regenerate,
            ),
        ];
        for (case, existing, expected) in cases {
            assert_eq!(plan(existing.as_ref(), &names, NOW), expected, "{case}");
        }
    }

    #[test]
    fn generated_bundle_round_trips_through_the_secret_and_renews_from_the_same_ca() {
        let names = dns_names("outrigger-webhook", "outrigger-system");
        let b = generate(&names, NOW).unwrap();
        assert!(b.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(b.key_pem.contains("PRIVATE KEY"));
        assert_eq!(b.cert_not_after, NOW + CERT_VALIDITY_SECS);
        assert_eq!(plan(Some(&b), &names, NOW), Plan::Keep);

        let secret = to_secret(&b, "outrigger-webhook-tls", "outrigger-system");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(from_secret(&secret), Some(b.clone()));

        let mut renewed = b.clone();
        let later = NOW + CERT_VALIDITY_SECS - RENEW_BEFORE_SECS + 1;
        assert_eq!(plan(Some(&renewed), &names, later), Plan::RenewServing);
        issue_serving(&mut renewed, &names, later).unwrap();
        assert_eq!(
            renewed.ca_cert_pem, b.ca_cert_pem,
            "the caBundle does not change on renewal"
        );
        assert_ne!(renewed.cert_pem, b.cert_pem);
        assert_eq!(plan(Some(&renewed), &names, later), Plan::Keep);
    }

    #[test]
    fn ca_bundle_patches_only_what_differs() {
        let ca = ByteString(b"CA".to_vec());
        let old = ByteString(b"OLD".to_vec());
        assert_eq!(
            ca_bundle_patch(&[Some(ca.clone()), Some(ca.clone())], &ca),
            None
        );
        let patch = ca_bundle_patch(&[Some(ca.clone()), None, Some(old)], &ca).unwrap();
        let v = serde_json::to_value(patch).unwrap();
        assert_eq!(
            v,
            json!([
                { "op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "Q0E=" },
                { "op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "Q0E=" },
            ])
        );
    }
}
