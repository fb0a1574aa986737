//! The `RuntimeConfig` custom resource: the shared `RuntimeConfigSpec` as `spec` (never a copy of
//! it), the status the controller writes, and the CustomResourceDefinition generated from both.
//! `kube`'s derive wants to own the spec type, so the root object, its `Resource` impl and its CRD
//! are written here by hand, with the same schema settings the derive uses plus our additions:
//! name-keyed lists (`x-kubernetes-list-type: map`, so the API server rejects duplicate names at no
//! CEL cost) and CEL rules for the one-of constraints. Not for validation logic (that is
//! `outrigger_config::validate`) or for reconcile.

use std::borrow::Cow;

use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
        CustomResourceDefinitionSpec, CustomResourceDefinitionVersion,
        CustomResourceSubresourceStatus, CustomResourceSubresources, CustomResourceValidation,
        JSONSchemaProps,
    },
    apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta},
};
use kube::core::{
    ApiResource, NamespaceResourceScope, Resource,
    crd::v1::CustomResourceExt,
    object::{HasSpec, HasStatus},
};
use outrigger_config::RuntimeConfigSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::names::{GROUP, KIND, PLURAL, SHORT_NAME, VERSION};

/// A `RuntimeConfig`: the sidecar's `runtime.yaml` as a namespaced Kubernetes object.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "RuntimeConfig",
    description = "The Outrigger sidecar's runtime.yaml as a Kubernetes object; the operator writes it to the ConfigMap outrigger-<name>."
)]
pub struct RuntimeConfig {
    /// Standard object metadata.
    #[schemars(skip)]
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The sidecar's config document, verbatim.
    pub spec: RuntimeConfigSpec,
    /// What the controller last did with the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RuntimeConfigStatus>,
}

/// Status written by the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfigStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`: the spec passes the sidecar's validation. `Ready`: the ConfigMap holds this spec. `RolledOut`: every injected pod using it was admitted with the current config.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Hash of the config in the ConfigMap (what the sidecars run); unchanged while the spec is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Every validation error of the current spec, as `path: message`; empty when valid.
    #[serde(default)]
    pub errors: Vec<String>,
    /// How many injected pods run the current config: the hash each running sidecar reports on
    /// its admin port (hot reloads count), else the `outrigger.dev/config-hash` it was admitted
    /// with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// Injected pods using a RuntimeConfig, by whether they run its current config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Injected pods (not finished, not terminating) whose `outrigger.dev/config` names this RuntimeConfig.
    pub pods: i32,
    /// Those running the current `configHash` (as their sidecar reports it, else as admitted).
    pub updated: i32,
    /// Those running another config, or none known; `pods - updated`.
    pub stale: i32,
}

impl RuntimeConfig {
    /// A RuntimeConfig with this name and spec, no namespace and no status.
    pub fn new(name: &str, spec: RuntimeConfigSpec) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// The generated CustomResourceDefinition, or why the schema could not be generated.
    pub fn try_crd() -> Result<CustomResourceDefinition, CrdError> {
        Ok(CustomResourceDefinition {
            metadata: ObjectMeta {
                name: Some(<Self as CustomResourceExt>::crd_name().to_owned()),
                ..ObjectMeta::default()
            },
            spec: CustomResourceDefinitionSpec {
                group: GROUP.to_owned(),
                names: CustomResourceDefinitionNames {
                    kind: KIND.to_owned(),
                    list_kind: Some(format!("{KIND}List")),
                    plural: PLURAL.to_owned(),
                    short_names: Some(vec![SHORT_NAME.to_owned()]),
                    singular: Some(KIND.to_ascii_lowercase()),
                    categories: None,
                },
                scope: "Namespaced".to_owned(),
                versions: vec![CustomResourceDefinitionVersion {
                    name: VERSION.to_owned(),
                    served: true,
                    storage: true,
                    schema: Some(CustomResourceValidation {
                        open_api_v3_schema: Some(schema()?),
                    }),
                    subresources: Some(CustomResourceSubresources {
                        status: Some(CustomResourceSubresourceStatus(json!({}))),
                        scale: None,
                    }),
                    additional_printer_columns: Some(printer_columns()),
                    ..CustomResourceDefinitionVersion::default()
                }],
                ..CustomResourceDefinitionSpec::default()
            },
            status: None,
        })
    }

    /// The CRD as YAML, exactly as committed under `crds/`.
    pub fn crd_yaml() -> Result<String, CrdError> {
        let crd = Self::try_crd()?;
        let value = serde_json::to_value(&crd).map_err(CrdError::Schema)?;
        serde_saphyr::to_string(&value).map_err(|e| CrdError::Yaml(e.to_string()))
    }
}

/// Why the CRD could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The schemars schema is not a valid `JSONSchemaProps`.
    #[error("generated schema is not a valid JSONSchemaProps")]
    Schema(#[source] serde_json::Error),
    /// The CRD could not be written as YAML.
    #[error("cannot write the CRD as YAML: {0}")]
    Yaml(String),
}

fn printer_columns() -> Vec<CustomResourceColumnDefinition> {
    let column = |name: &str, type_: &str, json_path: &str, description: &str| {
        CustomResourceColumnDefinition {
            name: name.to_owned(),
            type_: type_.to_owned(),
            json_path: json_path.to_owned(),
            description: Some(description.to_owned()),
            format: None,
            priority: None,
        }
    };
    vec![
        column(
            "Ready",
            "string",
            r#".status.conditions[?(@.type=="Ready")].status"#,
            "Whether the ConfigMap holds the current spec",
        ),
        column(
            "Rolled out",
            "string",
            r#".status.conditions[?(@.type=="RolledOut")].status"#,
            "Whether every injected pod was admitted with the current config",
        ),
        column(
            "Pods",
            "integer",
            ".status.rollout.pods",
            "Injected pods using this RuntimeConfig",
        ),
        column(
            "Updated",
            "integer",
            ".status.rollout.updated",
            "Injected pods admitted with the current config",
        ),
        column(
            "Stale",
            "integer",
            ".status.rollout.stale",
            "Injected pods admitted with another config",
        ),
        column(
            "Config hash",
            "string",
            ".status.configHash",
            "Hash of the config the sidecars run",
        ),
        column(
            "Age",
            "date",
            ".metadata.creationTimestamp",
            "Time since creation",
        ),
    ]
}

/// The OpenAPI v3 schema: schemars with kube's structural rewrites, then our additions.
fn schema() -> Result<JSONSchemaProps, CrdError> {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(schemars::transform::RecursiveTransform(kubernetes_integer))
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut value = serde_json::to_value(generator.into_root_schema_for::<RuntimeConfig>())
        .map_err(CrdError::Schema)?;
    add_kubernetes_extensions(&mut value);
    serde_json::from_value(value).map_err(CrdError::Schema)
}

/// Unsigned integers as Kubernetes knows them: schemars writes `format: uint32`/`uint64`, which the
/// API server does not recognise (it warns on every apply); they become `int64` with their bounds
/// (`minimum: 0` unless the field says more, a 32-bit field's maximum).
fn kubernetes_integer(schema: &mut schemars::Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let max = match obj.get("format").and_then(Value::as_str) {
        Some("uint8") => Some(u64::from(u8::MAX)),
        Some("uint16") => Some(u64::from(u16::MAX)),
        Some("uint32") => Some(u64::from(u32::MAX)),
        Some("uint64" | "uint") => None,
        _ => return,
    };
    obj.insert("format".into(), json!("int64"));
    obj.entry("minimum").or_insert_with(|| json!(0));
    if let Some(max) = max {
        obj.entry("maximum").or_insert_with(|| json!(max));
    }
}

/// Lists keyed by a unique field, and CEL rules for constraints the schema cannot say.
///
/// Uniqueness of names is stated as `x-kubernetes-list-type: map` keyed on the name rather than
/// as a CEL `all(exists_one)` rule: the API server enforces it natively, and a quadratic rule over
/// an unbounded list exceeds the CRD's CEL cost budget, so the CRD would not install.
fn add_kubernetes_extensions(root: &mut Value) {
    let spec = ["properties", "spec", "properties"];
    for list in ["listeners", "routeTables", "clusters"] {
        if let Some(array) = at(root, &spec, list) {
            keyed_list(array, "name");
        }
    }
    let channels = ["properties", "spec", "properties", "rpc", "properties"];
    if let Some(array) = at(root, &channels, "channels") {
        keyed_list(array, "protocol");
    }
    if let Some(conditions) = root.pointer_mut("/properties/status/properties/conditions") {
        keyed_list(conditions, "type");
    }
    let routes = [
        "properties",
        "spec",
        "properties",
        "routeTables",
        "items",
        "properties",
        "routes",
        "items",
        "properties",
    ];
    if let Some(matcher) = at(root, &routes, "match") {
        add_rule(
            matcher,
            "(has(self.path) ? 1 : 0) + (has(self.pathPrefix) ? 1 : 0) + (has(self.pathRegex) ? 1 : 0) <= 1",
            "at most one of path, pathPrefix, pathRegex",
        );
        if let Some(header) = matcher
            .pointer_mut("/properties/headers/items")
            .filter(|v| v.is_object())
        {
            add_rule(
                header,
                "(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1",
                "give exactly one of exact, prefix, regex",
            );
        }
    }
}

fn at<'a>(root: &'a mut Value, path: &[&str], last: &str) -> Option<&'a mut Value> {
    let mut node = root;
    for key in path.iter().chain(std::iter::once(&last)) {
        node = node.get_mut(*key)?;
    }
    Some(node)
}

fn keyed_list(array: &mut Value, key: &str) {
    if let Some(obj) = array.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), json!("map"));
        obj.insert("x-kubernetes-list-map-keys".into(), json!([key]));
    }
}

fn add_rule(schema: &mut Value, rule: &str, message: &str) {
    if let Some(obj) = schema.as_object_mut() {
        let rules = obj
            .entry("x-kubernetes-validations")
            .or_insert_with(|| json!([]));
        if let Some(list) = rules.as_array_mut() {
            list.push(json!({ "rule": rule, "message": message }));
        }
    }
}

impl Serialize for RuntimeConfig {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let fields = if self.status.is_some() { 5 } else { 4 };
        let mut obj = ser.serialize_struct("RuntimeConfig", fields)?;
        obj.serialize_field("apiVersion", &<Self as Resource>::api_version(&()))?;
        obj.serialize_field("kind", &<Self as Resource>::kind(&()))?;
        obj.serialize_field("metadata", &self.metadata)?;
        obj.serialize_field("spec", &self.spec)?;
        if let Some(status) = &self.status {
            obj.serialize_field("status", status)?;
        }
        obj.end()
    }
}

impl Resource for RuntimeConfig {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        format!("{GROUP}/{VERSION}").into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CustomResourceExt for RuntimeConfig {
    fn crd() -> CustomResourceDefinition {
        // `try_crd` only fails if schemars and k8s-openapi disagree on JSON Schema, which the
        // drift test catches; a CRD without a schema is then rejected loudly by the API server.
        Self::try_crd().unwrap_or_default()
    }
    fn crd_name() -> &'static str {
        concat!("runtimeconfigs", ".", "outrigger.dev")
    }
    fn api_resource() -> ApiResource {
        ApiResource::erase::<Self>(&())
    }
    fn shortnames() -> &'static [&'static str] {
        &[SHORT_NAME]
    }
}

impl HasSpec for RuntimeConfig {
    type Spec = RuntimeConfigSpec;
    fn spec(&self) -> &RuntimeConfigSpec {
        &self.spec
    }
    fn spec_mut(&mut self) -> &mut RuntimeConfigSpec {
        &mut self.spec
    }
}

impl HasStatus for RuntimeConfig {
    type Status = RuntimeConfigStatus;
    fn status(&self) -> Option<&RuntimeConfigStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<RuntimeConfigStatus> {
        &mut self.status
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_and_scope_match_the_design() {
        let crd = RuntimeConfig::try_crd().unwrap();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("runtimeconfigs.outrigger.dev")
        );
        assert_eq!(crd.spec.group, "outrigger.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["rtc".to_owned()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Ready",
                "Rolled out",
                "Pods",
                "Updated",
                "Stale",
                "Config hash",
                "Age"
            ]
        );
        assert_eq!(RuntimeConfig::api_version(&()), "outrigger.dev/v1alpha1");
        assert_eq!(RuntimeConfig::crd_name(), crd.metadata.name.unwrap());
    }

    #[test]
    fn schema_is_structural_where_it_matters() {
        let crd = RuntimeConfig::try_crd().unwrap();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        for list in ["listeners", "routeTables", "clusters"] {
            assert_eq!(
                spec["properties"][list]["x-kubernetes-list-type"], "map",
                "{list}"
            );
            assert_eq!(
                spec["properties"][list]["x-kubernetes-list-map-keys"],
                json!(["name"])
            );
        }
        let filter = &spec["properties"]["rpc"]["properties"]["beforeInvoke"]["items"]["properties"]
            ["config"];
        assert_eq!(filter["x-kubernetes-preserve-unknown-fields"], true);
        let header = &spec["properties"]["routeTables"]["items"]["properties"]["routes"]["items"]["properties"]
            ["match"]["properties"]["headers"]["items"];
        assert_eq!(
            header["x-kubernetes-validations"][0]["message"],
            "give exactly one of exact, prefix, regex"
        );
        // Structural schemas may not use these at any level.
        let text = schema.to_string();
        for forbidden in [
            "\"$ref\"",
            "\"anyOf\":[{\"type\"",
            "\"additionalProperties\":false",
        ] {
            assert!(!text.contains(forbidden), "schema contains {forbidden}");
        }
    }

    #[test]
    fn serializes_with_type_meta_and_round_trips() {
        let rc = RuntimeConfig::new("default", RuntimeConfigSpec::default());
        let v = serde_json::to_value(&rc).unwrap();
        assert_eq!(v["apiVersion"], "outrigger.dev/v1alpha1");
        assert_eq!(v["kind"], "RuntimeConfig");
        assert!(v.get("status").is_none());
        let back: RuntimeConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, rc);
    }
}
