//! What the controller wants to exist for a `RuntimeConfig`: the ConfigMap `outrigger-<name>`
//! holding `runtime.yaml` and, once the mesh CA is loaded, the trust bundle `trust-bundle.pem`
//! (so injected sidecars find it next to their config), owned by the RuntimeConfig so deleting
//! it garbage-collects the file. The config hash covers `runtime.yaml` only.
//! Pure: no client, no clock. Not for deciding *whether* to write it (see `reconcile`) or for
//! status (see `status`).

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::Resource;
use outrigger_config::{ValidationErrors, config_hash, to_yaml, validate};

use crate::{
    crd::RuntimeConfig,
    names::{
        ANNOTATION_CONFIG_HASH, CONFIG_FILE_KEY, CONFIG_MAP_PREFIX, CONTROLLER_NAME,
        LABEL_RUNTIME_CONFIG, TRUST_BUNDLE_KEY,
    },
};

/// The objects rendered from one valid RuntimeConfig.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The ConfigMap the sidecars mount.
    pub config_map: ConfigMap,
    /// The hash of the rendered config (`outrigger_config::config_hash`).
    pub config_hash: String,
}

/// The name of the ConfigMap written for the RuntimeConfig `name`.
pub fn config_map_name(name: &str) -> String {
    format!("{CONFIG_MAP_PREFIX}{name}")
}

/// Validates the spec and renders the ConfigMap; an invalid spec renders nothing.
///
/// The owner reference is present when the RuntimeConfig has a `uid` (it came from the API
/// server); offline renders have none. `trust_bundle` (the mesh CA's PEM roots) goes under
/// `trust-bundle.pem` when given; it does not change the config hash.
pub fn desired(
    rc: &RuntimeConfig,
    trust_bundle: Option<&str>,
) -> Result<Desired, ValidationErrors> {
    validate(&rc.spec)?;
    let name = rc.metadata.name.clone().unwrap_or_default();
    let hash = config_hash(&rc.spec);
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            CONTROLLER_NAME.to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "outrigger".to_owned(),
        ),
        (LABEL_RUNTIME_CONFIG.to_owned(), name.clone()),
    ]);
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&name)),
            namespace: rc.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONFIG_HASH.to_owned(),
                hash.clone(),
            )])),
            owner_references: rc.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(
            std::iter::once((CONFIG_FILE_KEY.to_owned(), to_yaml(&rc.spec)))
                .chain(trust_bundle.map(|b| (TRUST_BUNDLE_KEY.to_owned(), b.to_owned())))
                .collect(),
        ),
        ..ConfigMap::default()
    };
    Ok(Desired {
        config_map,
        config_hash: hash,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use outrigger_config::{
        ChannelConfig, ClusterConfig, HostConfig, ListenerConfig, Protocol, RouteConfig,
        RouteTableConfig, RuntimeConfigSpec, parse_yaml,
    };

    use super::*;

    fn valid_spec() -> RuntimeConfigSpec {
        parse_yaml(
            r#"
rpc:
  channels: [{protocol: http, size: 4, listener: egress}]
listeners: [{name: egress, routeTable: t}]
routeTables: [{name: t, routes: [{cluster: c}]}]
clusters: [{name: c, hosts: [{address: "127.0.0.1:8080"}]}]
"#,
        )
        .unwrap()
    }

    fn rc(
        name: &str,
        ns: Option<&str>,
        uid: Option<&str>,
        spec: RuntimeConfigSpec,
    ) -> RuntimeConfig {
        let mut rc = RuntimeConfig::new(name, spec);
        rc.metadata.namespace = ns.map(str::to_owned);
        rc.metadata.uid = uid.map(str::to_owned);
        rc
    }

    #[test]
    fn desired_config_maps() {
        let mut two_clusters = valid_spec();
        two_clusters.clusters.push(ClusterConfig {
            hosts: vec![HostConfig {
                address: "users.default.svc:80".into(),
                weight: 3,
            }],
            ..two_clusters.clusters[0].clone()
        });
        two_clusters.clusters[1].name = "users".into();
        let cases = [
            // (case, object, expected ConfigMap name, namespace, has owner reference)
            (
                "from the API server",
                rc("default", Some("apps"), Some("u-1"), valid_spec()),
                "outrigger-default",
                Some("apps"),
                true,
            ),
            (
                "offline render",
                rc("edge", None, None, valid_spec()),
                "outrigger-edge",
                None,
                false,
            ),
            (
                "bigger spec",
                rc("two", Some("x"), Some("u-2"), two_clusters),
                "outrigger-two",
                Some("x"),
                true,
            ),
        ];
        for (case, rc, name, ns, owned) in cases {
            let d = desired(&rc, None).unwrap_or_else(|e| panic!("{case}: {e}"));
            let with_bundle = desired(&rc, Some("ROOTS")).unwrap();
            assert_eq!(
                with_bundle.config_hash, d.config_hash,
                "{case}: the hash is runtime.yaml's"
            );
            let data = with_bundle.config_map.data.as_ref().unwrap();
            assert_eq!(data[TRUST_BUNDLE_KEY], "ROOTS", "{case}");
            assert_eq!(
                data[CONFIG_FILE_KEY],
                d.config_map.data.as_ref().unwrap()[CONFIG_FILE_KEY]
            );
            assert!(
                !d.config_map
                    .data
                    .as_ref()
                    .unwrap()
                    .contains_key(TRUST_BUNDLE_KEY)
            );
            let cm = &d.config_map;
            assert_eq!(cm.metadata.name.as_deref(), Some(name), "{case}");
            assert_eq!(cm.metadata.namespace.as_deref(), ns, "{case}");
            let text = &cm.data.as_ref().unwrap()[CONFIG_FILE_KEY];
            // The file is the spec, verbatim: the sidecar's own loader accepts it and sees the same document.
            let loaded =
                outrigger_config::load_yaml(text).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(loaded, rc.spec, "{case}");
            assert_eq!(d.config_hash, config_hash(&rc.spec), "{case}");
            assert_eq!(
                cm.metadata.annotations.as_ref().unwrap()[ANNOTATION_CONFIG_HASH],
                d.config_hash,
                "{case}"
            );
            let labels = cm.metadata.labels.as_ref().unwrap();
            assert_eq!(
                labels[LABEL_RUNTIME_CONFIG],
                rc.metadata.name.clone().unwrap(),
                "{case}"
            );
            match (&cm.metadata.owner_references, owned) {
                (Some(refs), true) => {
                    assert_eq!(refs.len(), 1, "{case}");
                    let o = &refs[0];
                    assert_eq!(
                        (o.kind.as_str(), o.api_version.as_str()),
                        ("RuntimeConfig", "outrigger.dev/v1alpha1")
                    );
                    assert_eq!(o.uid, rc.metadata.uid.clone().unwrap(), "{case}");
                    assert_eq!(o.controller, Some(true), "{case}");
                }
                (None, false) => {}
                (other, _) => panic!("{case}: owner references {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_specs_render_nothing_and_list_every_error() {
        let mut bad = valid_spec();
        bad.rpc.channels.push(ChannelConfig {
            protocol: Protocol::Http,
            size: 0,
            listener: "nowhere".into(),
            ext: Default::default(),
            heartbeat: Default::default(),
        });
        bad.listeners.push(ListenerConfig {
            name: "egress".into(),
            protocol: Protocol::Http,
            address: None,
            route_table: "missing".into(),
            max_connections: None,
            header_read_timeout_ms: None,
            idle_timeout_ms: None,
            rate_limit: None,
            tls: None,
            authorization: None,
        });
        bad.route_tables.push(RouteTableConfig {
            name: "t2".into(),
            routes: vec![RouteConfig {
                cluster: "nope".into(),
                ..bad.route_tables[0].routes[0].clone()
            }],
        });
        let err = desired(&rc("bad", Some("ns"), Some("u"), bad), Some("ROOTS")).unwrap_err();
        let lines = err.lines();
        for expected in [
            "rpc.channels[1].size: must be at least 1",
            "rpc.channels[1].protocol: duplicate channel for protocol \"http\"",
            "listeners[1].name: duplicate name \"egress\"",
            "listeners[1].routeTable: unknown route table \"missing\"",
            "routeTables[1].routes[0].cluster: unknown cluster \"nope\"",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "missing {expected:?} in {lines:#?}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("rpc.channels[1].listener: unknown listener")),
            "{lines:#?}"
        );
        assert!(desired(&rc("empty", None, None, RuntimeConfigSpec::default()), None).is_err());
    }
}
