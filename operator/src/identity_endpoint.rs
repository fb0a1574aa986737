//! The identity endpoint: gRPC `outrigger.identity.v1.Identity/Certify`, for sidecars where
//! Kubernetes Pod Certificates are not available. A sidecar sends a certificate signing request
//! and a projected ServiceAccount token (audience `identity.outrigger.dev`, bound to its pod);
//! the endpoint runs a TokenReview with that audience, checks the pod the token is bound to still
//! exists under that UID and ServiceAccount, checks the request asks for no other identity, and
//! signs the key with the mesh CA. Every replica serves it: signing needs only the CA. The same
//! authentication admits discovery streams (`discovery_endpoint`). Not for the server and its
//! TLS (`endpoint`), Pod Certificates (`signer`) or the CA itself (`mesh_ca`).

use std::sync::Arc;

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus},
    core::v1::Pod,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use outrigger_config::IDENTITY_TOKEN_AUDIENCE;
use outrigger_proto::outrigger::identity::v1::{
    CertifyRequest, CertifyResponse, identity_server::Identity,
};
use tonic::{Request, Response, Status};

use crate::{
    mesh_ca::{MeshCaHandle, csr_public_key, spiffe_id},
    metrics::Metrics,
    signer::SignerSettings,
};

/// The token claims binding it to a pod.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Who a reviewed token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// Its UID.
    pub pod_uid: String,
}

/// The caller a TokenReview's status proves, or why it proves none.
pub fn caller_of_review(status: Option<&TokenReviewStatus>) -> Result<Caller, Status> {
    let status = status.ok_or_else(|| Status::unavailable("the TokenReview came back empty"))?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("not authenticated");
        return Err(Status::unauthenticated(format!(
            "the token was refused by the API server: {why}"
        )));
    }
    if let Some(audiences) = &status.audiences
        && !audiences.iter().any(|a| a == IDENTITY_TOKEN_AUDIENCE)
    {
        return Err(Status::unauthenticated(format!(
            "the token is not for audience {IDENTITY_TOKEN_AUDIENCE}"
        )));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "the token is {username:?}'s, not a ServiceAccount's"
            ))
        })?;
    let extra = |key: &str| {
        user.and_then(|u| u.extra.as_ref())
            .and_then(|e| e.get(key))
            .and_then(|v| v.first())
            .cloned()
            .filter(|v| !v.is_empty())
    };
    let (Some(pod_name), Some(pod_uid)) = (extra(POD_NAME_EXTRA), extra(POD_UID_EXTRA)) else {
        return Err(Status::permission_denied(format!(
            "the token of {username} is bound to no pod: use a projected serviceAccountToken volume (audience {IDENTITY_TOKEN_AUDIENCE})"
        )));
    };
    Ok(Caller {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod_name,
        pod_uid,
    })
}

/// Whether `pod` (as read now) is the caller's: the same UID, the same ServiceAccount, not
/// finished.
pub fn check_pod(caller: &Caller, pod: Option<&Pod>) -> Result<(), Status> {
    let name = format!("{}/{}", caller.namespace, caller.pod_name);
    let pod = pod.ok_or_else(|| {
        Status::permission_denied(format!("pod {name}, the token's, does not exist"))
    })?;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if uid != caller.pod_uid {
        return Err(Status::permission_denied(format!(
            "pod {name} has UID {uid:?}; the token was issued to UID {:?}",
            caller.pod_uid
        )));
    }
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if sa != caller.service_account {
        return Err(Status::permission_denied(format!(
            "pod {name} runs as ServiceAccount {sa:?}, the token is {:?}'s",
            caller.service_account
        )));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Err(Status::permission_denied(format!(
            "pod {name} has finished ({})",
            phase.unwrap_or_default()
        )));
    }
    Ok(())
}

/// The key of a certificate signing request that asks for `id` or for nothing: its subject
/// alternative names, if any, must be exactly the URI `id`.
pub fn check_csr(csr_der: &[u8], id: &str) -> Result<Vec<u8>, Status> {
    let spki = csr_public_key(csr_der).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let (_, csr) = <x509_parser::certification_request::X509CertificationRequest<'_> as x509_parser::prelude::FromDer<'_, _>>::from_der(csr_der)
        .map_err(|e| Status::invalid_argument(format!("certificate request: {e}")))?;
    let mut asked = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                asked.push(match name {
                    x509_parser::extensions::GeneralName::URI(uri) => (*uri).to_owned(),
                    other => format!("{other}"),
                });
            }
        }
    }
    if !asked.is_empty() && asked != [id] {
        return Err(Status::permission_denied(format!(
            "the request asks for {}; the token proves {id}",
            asked.join(", ")
        )));
    }
    Ok(spki)
}

/// The caller a request's `authorization: Bearer <token>` proves, by a TokenReview with the
/// audience `identity.outrigger.dev` and a live read of the pod the token is bound to.
pub(crate) async fn authenticate(
    client: &Client,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Caller, Status> {
    let token = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::unauthenticated("no `authorization: Bearer <token>` metadata"))?
        .to_owned();
    let review = TokenReview {
        metadata: ObjectMeta::default(),
        spec: TokenReviewSpec {
            token,
            audiences: Some(vec![IDENTITY_TOKEN_AUDIENCE.to_owned()]),
        },
        status: None,
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| Status::unavailable(format!("cannot review the token: {e}")))?;
    let caller = caller_of_review(reviewed.status.as_ref())?;
    let pod = Api::<Pod>::namespaced(client.clone(), &caller.namespace)
        .get_opt(&caller.pod_name)
        .await
        .map_err(|e| Status::unavailable(format!("cannot read the caller's pod: {e}")))?;
    check_pod(&caller, pod.as_ref())?;
    Ok(caller)
}

/// The metric label of a call's outcome.
pub(crate) fn result_label<T>(result: &Result<T, Status>, ok: &'static str) -> &'static str {
    match result {
        Ok(_) => ok,
        Err(s) => match s.code() {
            tonic::Code::Unauthenticated => "unauthenticated",
            tonic::Code::PermissionDenied => "denied",
            tonic::Code::InvalidArgument => "invalid",
            tonic::Code::Unavailable => "unavailable",
            _ => "error",
        },
    }
}

/// The `Identity` service.
pub struct IdentityService {
    client: Client,
    ca: MeshCaHandle,
    settings: SignerSettings,
    metrics: Arc<Metrics>,
}

impl IdentityService {
    /// A service signing with `ca` under `settings` (trust domain, lifetime).
    pub fn new(
        client: Client,
        ca: MeshCaHandle,
        settings: SignerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            ca,
            settings,
            metrics,
        }
    }

    async fn handle(&self, request: Request<CertifyRequest>) -> Result<CertifyResponse, Status> {
        let caller = authenticate(&self.client, request.metadata()).await?;
        let id = spiffe_id(
            &self.settings.trust_domain,
            &caller.namespace,
            &caller.service_account,
        );
        let spki = check_csr(&request.get_ref().csr, &id)?;
        let ca = self
            .ca
            .current()
            .ok_or_else(|| Status::unavailable("the mesh CA is not loaded yet"))?;
        let now = now();
        let leaf = ca
            .sign_leaf(&spki, &id, self.settings.lifetime, now)
            .map_err(|e| Status::internal(format!("cannot sign: {e}")))?;
        tracing::info!(%id, pod = %caller.pod_name, not_after = leaf.not_after, "certificate issued over the identity endpoint");
        Ok(CertifyResponse {
            certificate_chain_pem: leaf.chain_pem,
            spiffe_id: id,
            not_after: leaf.not_after,
            // Half of what is left (the validity starts backdated).
            refresh_after: now + (leaf.not_after - now) / 2,
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = request.remote_addr();
        let result = self.handle(request).await;
        self.metrics
            .identity_request(result_label(&result, "issued"));
        if let Err(s) = &result {
            tracing::warn!(peer = ?peer, code = ?s.code(), reason = %s.message(), "identity request refused");
        }
        result.map(Response::new)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, user: &str, extra: &[(&str, &str)]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(vec![IDENTITY_TOKEN_AUDIENCE.to_owned()]),
            user: Some(UserInfo {
                username: Some(user.to_owned()),
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..UserInfo::default()
            }),
            error: (!authenticated).then(|| "token expired".to_owned()),
        }
    }

    fn bound() -> [(&'static str, &'static str); 2] {
        [(POD_NAME_EXTRA, "web-1"), (POD_UID_EXTRA, "uid-1")]
    }

    #[test]
    fn a_bound_service_account_token_names_its_pod() {
        let caller = caller_of_review(Some(&status(
            true,
            "system:serviceaccount:shop:web",
            &bound(),
        )))
        .unwrap();
        assert_eq!(
            caller,
            Caller {
                namespace: "shop".into(),
                service_account: "web".into(),
                pod_name: "web-1".into(),
                pod_uid: "uid-1".into()
            }
        );
    }

    #[test]
    fn tokens_that_prove_no_pod_are_refused_by_name() {
        for (st, code, want) in [
            (
                status(false, "", &[]),
                tonic::Code::Unauthenticated,
                "token expired",
            ),
            (
                status(true, "alice", &bound()),
                tonic::Code::PermissionDenied,
                "not a ServiceAccount's",
            ),
            (
                status(true, "system:serviceaccount:shop:web", &[]),
                tonic::Code::PermissionDenied,
                "bound to no pod",
            ),
            (
                TokenReviewStatus {
                    audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                    ..status(true, "system:serviceaccount:shop:web", &bound())
                },
                tonic::Code::Unauthenticated,
                "not for audience",
            ),
        ] {
            let e = caller_of_review(Some(&st)).unwrap_err();
            assert_eq!(e.code(), code, "{e:?}");
            assert!(e.message().contains(want), "{e:?}");
        }
    }

    fn pod(uid: &str, sa: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": "shop", "uid": uid },
            "spec": { "serviceAccountName": sa, "containers": [] },
            "status": { "phase": phase },
        }))
        .unwrap()
    }

    #[test]
    fn the_pod_must_be_the_tokens_and_still_running() {
        let caller = Caller {
            namespace: "shop".into(),
            service_account: "web".into(),
            pod_name: "web-1".into(),
            pod_uid: "uid-1".into(),
        };
        assert!(check_pod(&caller, Some(&pod("uid-1", Some("web"), "Running"))).is_ok());
        for (p, want) in [
            (None, "does not exist"),
            (Some(pod("uid-2", Some("web"), "Running")), "has UID"),
            (
                Some(pod("uid-1", None, "Running")),
                "ServiceAccount \"default\"",
            ),
            (Some(pod("uid-1", Some("web"), "Succeeded")), "has finished"),
        ] {
            let e = check_pod(&caller, p.as_ref()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            assert!(e.message().contains(want), "{e:?}");
        }
    }

    fn csr(uris: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_request_may_ask_only_for_the_identity_the_token_proves() {
        let me = "spiffe://cluster.local/ns/shop/sa/web";
        assert!(check_csr(&csr(&[me]), me).is_ok());
        assert!(check_csr(&csr(&[]), me).is_ok());
        let e = check_csr(&csr(&["spiffe://cluster.local/ns/shop/sa/admin"]), me).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("sa/admin"), "{e:?}");
        let e = check_csr(&csr(&[me, "spiffe://cluster.local/ns/x/sa/y"]), me).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = check_csr(b"not a csr", me).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
