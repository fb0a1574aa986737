//! Layering: the runtime stays a DAG, at the crate level and inside every crate.
//!
//! * **Crates** (from `cargo metadata --no-deps`): the runtime under `runtime/` is at least
//!   [`MIN_RUNTIME_CRATES`] crates besides [`RUNTIME_SUPPORT_CRATES`]; the workspace crate graph
//!   (normal and build dependencies) has no cycle; and every crate in [`LAYERS`] depends only on
//!   crates of strictly lower layers. A crate under `runtime/` missing from [`LAYERS`] fails the
//!   test until it is placed there, and so does a name in [`LAYERS`] that is no workspace crate.
//! * **Modules**: in every lib and bin target of every workspace crate, modules that share a
//!   parent do not refer to each other round a loop (checked at every level of nesting).
//!
//! Edit the layer table below when the crate cut changes.
//!
//! # How module references are found
//!
//! A small, deliberately simple scanner, not a Rust parser:
//!
//! * The module tree follows `mod name;` (to `name.rs` or `name/mod.rs`, next to a `lib.rs` /
//!   `main.rs` / `mod.rs`, else in the directory named after the file) and inline
//!   `mod name { … }`. `#[path]` and `include!` are not followed (proto's generated code is
//!   `include!`d, and stays out); a `mod name;` whose file is not found fails the test, so
//!   nothing is skipped silently.
//! * Comments, string/char literals and attribute contents are dropped. An item under
//!   `#[cfg(test)]` and any module named `tests` are skipped: test code may import anything.
//! * A reference is a path starting with `crate::`, `self::` or `super::` anywhere in the code,
//!   or any `use` path (each leaf of a `use a::{b, c::d}` tree; a bare `use child::…` in a
//!   parent is resolved to its child module, or through a name the module imported). Visibility
//!   paths (`pub(in crate::x)`) are not references.
//! * A path names the deepest module it walks through. When its next segment is a name that
//!   module imports (`use`/`pub use`, e.g. a re-export in `lib.rs` or `mod.rs`), it is followed
//!   to where that name comes from. Glob re-exports are not followed.
//! * A reference from module `a::b::x` to `a::c::y` is the edge `b → c` among the children of
//!   `a`, the level where the two paths part. A module referring to its own ancestor (an item
//!   defined in the parent's `mod.rs`, e.g. `use super::Shared`) or to its own descendant is no
//!   edge: a parent declaring `mod child;` is not an import.
//!
//! Cycles are the strongly connected components (Tarjan) of each level's graph.
//!
//! `OUTRIGGER_LAYERING_ROOT=/path/to/a/checkout` runs the same checks on another workspace;
//! `OUTRIGGER_LAYERING_DEBUG=1` prints every module edge found.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde_json::Value;

// =============================================================================================
// The intended layering. Edit here.
// =============================================================================================

/// The crate layers, lowest first. A crate may depend (normal and build dependencies) only on
/// workspace crates of a strictly lower layer, so crates of one layer never depend on each
/// other. The last layer is the composition root: it may depend on everything below it.
/// Every crate under `runtime/` must be listed.
const LAYERS: &[&[&str]] = &[
    /* 0 */ &["outrigger-config", "outrigger-codec", "outrigger-proto"],
    /* 1 */ &["outrigger-core"],
    /* 2 */ &["outrigger-pool", "outrigger-identity"],
    /* 3 */ &["outrigger-proxy", "outrigger-invoke"],
    /* 4 */ &["outrigger-channel"],
    /* 5 */ &["outrigger-api"],
    /* 6 */ &["outrigger-runtime"], // composition root: the binary and `Sidecar`
];

/// The runtime itself must be at least this many crates (crates under [`RUNTIME_DIR`] other
/// than [`RUNTIME_SUPPORT_CRATES`]).
const MIN_RUNTIME_CRATES: usize = 5;

/// Crates under [`RUNTIME_DIR`] that are libraries the runtime uses rather than pieces of it:
/// placed in [`LAYERS`] like the others, but not counted towards [`MIN_RUNTIME_CRATES`].
const RUNTIME_SUPPORT_CRATES: &[&str] = &["outrigger-config", "outrigger-codec"];

/// Where the runtime's crates live, relative to the workspace root.
const RUNTIME_DIR: &str = "runtime";

/// How to fix a module cycle, printed under the cycles.
const MODULE_FIX: &str = "\
How to fix: find what each side needs from the other and move it down a layer: into a module \
(or crate) that both can use and that uses neither, or invert the dependency (the lower side \
defines a trait or takes a callback, the higher side implements or passes it). References must \
only point one way.";

// =============================================================================================
// Crate level
// =============================================================================================

#[test]
fn runtime_is_split_into_enough_crates() {
    let ws = workspace();
    let runtime: Vec<&str> = ws
        .runtime_crates()
        .map(|p| p.name.as_str())
        .filter(|n| !RUNTIME_SUPPORT_CRATES.contains(n))
        .collect();
    assert!(
        runtime.len() >= MIN_RUNTIME_CRATES,
        "only {} runtime crate(s) under {RUNTIME_DIR}/ besides {RUNTIME_SUPPORT_CRATES:?}: {runtime:?}; \
         the runtime must be at least {MIN_RUNTIME_CRATES} crates forming a DAG \
         (see LAYERS in tests/layering.rs)",
        runtime.len(),
    );
}

#[test]
fn workspace_crates_form_a_dag() {
    let ws = workspace();
    let graph: BTreeMap<String, BTreeSet<String>> = ws
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.deps.iter().cloned().collect()))
        .collect();
    let cycles: Vec<String> = strongly_connected(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| shortest_cycle(&graph, &scc).join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "workspace crates depend on each other in a cycle:\n  {}\nmove what one needs from the \
         other into a lower crate",
        cycles.join("\n  ")
    );
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let ws = workspace();
    let mut layer_of: HashMap<&str, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (layer, names) in LAYERS.iter().enumerate() {
        for &name in *names {
            if let Some(other) = layer_of.insert(name, layer) {
                problems.push(format!(
                    "LAYERS lists `{name}` twice (layers {other} and {layer})"
                ));
            }
            if !ws.packages.iter().any(|p| p.name == name) {
                problems.push(format!(
                    "LAYERS lists `{name}` (layer {layer}), but the workspace has no such crate: \
                     remove or rename it in tests/layering.rs"
                ));
            }
        }
    }
    for p in ws.runtime_crates() {
        if !layer_of.contains_key(p.name.as_str()) {
            problems.push(format!(
                "`{}` ({}) is a runtime crate but has no layer: place it in LAYERS at the top of \
                 tests/layering.rs, in the lowest layer above every crate it depends on ({:?})",
                p.name,
                ws.relative(&p.manifest_dir).display(),
                p.deps,
            ));
        }
    }
    for p in &ws.packages {
        let Some(&layer) = layer_of.get(p.name.as_str()) else {
            continue;
        };
        for dep in &p.deps {
            match layer_of.get(dep.as_str()) {
                Some(&below) if below < layer => {}
                Some(&other) => problems.push(format!(
                    "`{}` (layer {layer}) depends on `{dep}` (layer {other}): a crate may only \
                     depend on lower layers; move what `{}` needs from `{dep}` down a layer, or \
                     change the layer table if the cut is meant to be different",
                    p.name, p.name,
                )),
                None => problems.push(format!(
                    "`{}` (layer {layer}) depends on workspace crate `{dep}`, which has no layer \
                     in LAYERS (tests/layering.rs)",
                    p.name,
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "crate layering:\n  {}",
        problems.join("\n  ")
    );
}

/// A workspace package, as far as these checks need it.
#[derive(Debug)]
struct Package {
    name: String,
    manifest_dir: PathBuf,
    /// Workspace crates this one depends on (normal and build dependencies; not dev).
    deps: Vec<String>,
    /// Lib and bin targets: (label, root source file).
    roots: Vec<(String, PathBuf)>,
}

#[derive(Debug)]
struct Workspace {
    root: PathBuf,
    packages: Vec<Package>,
}

impl Workspace {
    /// The crates under [`RUNTIME_DIR`] (fuzz crates aside).
    fn runtime_crates(&self) -> impl Iterator<Item = &Package> {
        let dir = self.root.join(RUNTIME_DIR);
        self.packages.iter().filter(move |p| {
            p.manifest_dir.starts_with(&dir)
                && !p.manifest_dir.components().any(|c| c.as_os_str() == "fuzz")
        })
    }

    fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(load_workspace)
}

fn load_workspace() -> Workspace {
    let dir = std::env::var_os("OUTRIGGER_LAYERING_ROOT")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{} metadata`: {e}", cargo.to_string_lossy()));
    assert!(
        out.status.success(),
        "`cargo metadata` failed in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let root = PathBuf::from(meta["workspace_root"].as_str().expect("workspace_root"));
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let packages = packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("package name").to_owned();
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest_path"));
            let mut deps: Vec<String> = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| matches!(d["kind"].as_str(), None | Some("build")))
                .filter(|d| d["path"].is_string())
                .filter_map(|d| d["name"].as_str())
                .filter(|n| names.contains(n))
                .map(str::to_owned)
                .collect();
            deps.sort();
            deps.dedup();
            let roots = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    let kinds: Vec<&str> = t["kind"]
                        .as_array()?
                        .iter()
                        .filter_map(Value::as_str)
                        .collect();
                    let kind = kinds.iter().find(|k| {
                        matches!(
                            **k,
                            "lib"
                                | "rlib"
                                | "dylib"
                                | "cdylib"
                                | "staticlib"
                                | "proc-macro"
                                | "bin"
                        )
                    })?;
                    let label = format!("{name} ({kind} {})", t["name"].as_str()?);
                    Some((label, PathBuf::from(t["src_path"].as_str()?)))
                })
                .collect();
            Package {
                name,
                manifest_dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
                deps,
                roots,
            }
        })
        .collect();
    Workspace { root, packages }
}

// =============================================================================================
// Module level
// =============================================================================================

#[test]
fn modules_do_not_form_import_cycles() {
    let ws = workspace();
    let mut report = String::new();
    for package in &ws.packages {
        for (label, root) in &package.roots {
            let model = CrateModel::build(root);
            if std::env::var_os("OUTRIGGER_LAYERING_DEBUG").is_some() {
                eprintln!("{label}: {} modules", model.modules.len());
                for (parent, edges) in model.edges() {
                    for ((a, b), refs) in edges {
                        eprintln!("  {}: {a} -> {b} ({} refs)", scope(&parent), refs.len());
                    }
                }
            }
            for problem in model.problems(&ws.root) {
                let _ = writeln!(report, "{label}: {problem}");
            }
        }
    }
    assert!(
        report.is_empty(),
        "module layering:\n{report}\n{MODULE_FIX}"
    );
}

/// The scanner on a made-up crate: a real cycle (also one through a re-export) is found;
/// parent/child references, comments, strings and test modules make no edges.
#[test]
fn module_scanner_finds_cycles_and_ignores_parents_comments_and_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files: &[(&str, &str)] = &[
        (
            "lib.rs",
            "mod a;\nmod b;\nmod p;\nmod q;\nmod r;\npub use crate::q::Thing;\n\
             /// [`crate::p::Shared`] in a doc comment\npub struct Root;\n",
        ),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        (
            "b.rs",
            "pub struct B;\nfn f() -> crate::a::A { crate::a::A }\n",
        ),
        (
            "p/mod.rs",
            "mod c;\nmod d;\npub(in crate::p) use self::d::D;\npub struct Shared;\n\
             fn g() { let _ = c::C; }\n",
        ),
        (
            "p/c.rs",
            "use super::{Shared, d::D};\npub struct C;\nconst S: &str = \"super::e\";\n",
        ),
        (
            "p/d.rs",
            "use super::Shared; // super::c::C\n/* crate::p::c */\npub struct D;\n\
             #[cfg(test)]\nmod tests {\n    use super::super::c::C;\n}\nfn h() -> char { '}' }\n",
        ),
        (
            "q.rs",
            "pub struct Thing;\nfn f() { let _ = crate::r::R; }\n",
        ),
        ("r.rs", "pub struct R;\nfn f() { let _ = crate::Thing; }\n"),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }
    let model = CrateModel::build(&dir.path().join("lib.rs"));
    let problems = model.problems(dir.path());
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("a -> b -> a"), "{}", problems[0]);
    assert!(problems[0].contains("b -> a: b.rs:2"), "{}", problems[0]);
    assert!(problems[1].contains("q -> r -> q"), "{}", problems[1]);
    assert!(problems[1].contains("r -> q: r.rs:2"), "{}", problems[1]);
}

type ModPath = Vec<String>;

/// The edges among one module's children: (from, to) → where the references are (file, line).
type LevelEdges = BTreeMap<(String, String), Vec<(PathBuf, usize)>>;

/// A reference to a path, found in a module's source.
#[derive(Debug)]
struct Ref {
    from: ModPath,
    segs: Vec<String>,
    /// A `use` leaf: bare paths are resolved too, and it binds `bind` in `from`.
    is_use: bool,
    bind: Option<String>,
    file: PathBuf,
    line: usize,
}

#[derive(Debug, Default)]
struct CrateModel {
    /// Every module, with the names of its child modules.
    modules: BTreeMap<ModPath, BTreeSet<String>>,
    refs: Vec<Ref>,
    /// Names a module imports: (module, name) → index into `refs`.
    bindings: HashMap<(ModPath, String), usize>,
    /// Things the scanner could not follow (a `mod x;` without a file): file, line, what.
    unreadable: Vec<(PathBuf, usize, String)>,
}

impl CrateModel {
    fn build(root: &Path) -> Self {
        let mut model = Self::default();
        model.modules.insert(Vec::new(), BTreeSet::new());
        let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut queue = vec![(root.to_path_buf(), Vec::new(), dir)];
        while let Some((file, path, child_dir)) = queue.pop() {
            match std::fs::read_to_string(&file) {
                Ok(text) => model.scan(&file, &text, &path, &child_dir, &mut queue),
                Err(e) => model
                    .unreadable
                    .push((file, 0, format!("cannot read it: {e}"))),
            }
        }
        for (i, r) in model.refs.iter().enumerate() {
            if let Some(name) = &r.bind {
                model
                    .bindings
                    .entry((r.from.clone(), name.clone()))
                    .or_insert(i);
            }
        }
        model
    }

    /// Scans one file of module `path`; `child_dir` is where its `mod x;` files live.
    fn scan(
        &mut self,
        file: &Path,
        text: &str,
        path: &ModPath,
        child_dir: &Path,
        queue: &mut Vec<(PathBuf, ModPath, PathBuf)>,
    ) {
        let toks = lex(text);
        // Inline modules open in this file: (module path, its child dir, brace depth inside it).
        let mut stack: Vec<(ModPath, PathBuf, usize)> =
            vec![(path.clone(), child_dir.to_path_buf(), 0)];
        let mut depth = 0usize;
        let mut cfg_test = false;
        let mut i = 0;
        while i < toks.len() {
            let (module, dir, _) = stack.last().cloned().expect("the file's own module");
            match &toks[i].kind {
                Tok::Punct('#') => {
                    let mut j = i + 1;
                    if toks.get(j).is_some_and(|t| t.kind == Tok::Punct('!')) {
                        j += 1;
                    }
                    if toks.get(j).is_some_and(|t| t.kind == Tok::Punct('[')) {
                        let end = matching(&toks, j);
                        cfg_test |= is_cfg_test(&toks[j + 1..end.min(toks.len())]);
                        i = end + 1;
                    } else {
                        i += 1;
                    }
                }
                _ if cfg_test => {
                    cfg_test = false;
                    i = skip_item(&toks, i);
                }
                Tok::Ident(kw)
                    if kw == "pub"
                        && toks.get(i + 1).is_some_and(|t| t.kind == Tok::Punct('(')) =>
                {
                    i = matching(&toks, i + 1) + 1;
                }
                Tok::Ident(kw) if kw == "mod" => {
                    let Some(Tok::Ident(name)) = toks.get(i + 1).map(|t| &t.kind) else {
                        i += 1;
                        continue;
                    };
                    if name == "tests" {
                        i = skip_item(&toks, i);
                        continue;
                    }
                    let mut child = module.clone();
                    child.push(name.clone());
                    match toks.get(i + 2).map(|t| &t.kind) {
                        Some(Tok::Punct(';')) => {
                            let candidates = [
                                dir.join(format!("{name}.rs")),
                                dir.join(name).join("mod.rs"),
                            ];
                            if let Some(f) = candidates.iter().find(|f| f.is_file()) {
                                queue.push((f.clone(), child.clone(), dir.join(name)));
                            } else {
                                self.unreadable.push((
                                    file.to_path_buf(),
                                    toks[i].line,
                                    format!(
                                        "no file for `mod {name};` (the layering scanner does not \
                                         follow #[path])"
                                    ),
                                ));
                            }
                            i += 3;
                        }
                        Some(Tok::Punct('{')) => {
                            depth += 1;
                            stack.push((child.clone(), dir.join(name), depth));
                            i += 3;
                        }
                        _ => {
                            i += 2;
                            continue;
                        }
                    }
                    self.modules.entry(module).or_default().insert(name.clone());
                    self.modules.entry(child).or_default();
                }
                Tok::Ident(kw) if kw == "use" => {
                    let mut pos = i + 1;
                    let mut leaves = Vec::new();
                    parse_use_tree(&toks, &mut pos, Vec::new(), &mut leaves);
                    for (segs, bind, line) in leaves {
                        self.refs.push(Ref {
                            from: module.clone(),
                            segs,
                            is_use: true,
                            bind,
                            file: file.to_path_buf(),
                            line,
                        });
                    }
                    i = skip_item(&toks, pos.max(i + 1));
                }
                Tok::Ident(kw)
                    if matches!(kw.as_str(), "crate" | "self" | "super")
                        && toks.get(i + 1).is_some_and(|t| t.kind == Tok::PathSep)
                        && (i == 0 || toks[i - 1].kind != Tok::PathSep) =>
                {
                    let mut segs = vec![kw.clone()];
                    let mut j = i + 1;
                    while toks.get(j).is_some_and(|t| t.kind == Tok::PathSep) {
                        let Some(Tok::Ident(s)) = toks.get(j + 1).map(|t| &t.kind) else {
                            break;
                        };
                        segs.push(s.clone());
                        j += 2;
                    }
                    self.refs.push(Ref {
                        from: module,
                        segs,
                        is_use: false,
                        bind: None,
                        file: file.to_path_buf(),
                        line: toks[i].line,
                    });
                    i = j;
                }
                Tok::Punct('{') => {
                    depth += 1;
                    i += 1;
                }
                Tok::Punct('}') => {
                    if stack.len() > 1 && stack.last().is_some_and(|s| s.2 == depth) {
                        stack.pop();
                    }
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }

    /// `segs` as written in module `from`, made absolute (without the leading `crate`); `None`
    /// for paths into other crates or that cannot be resolved.
    fn absolute(
        &self,
        from: &[String],
        segs: &[String],
        is_use: bool,
        hops: usize,
    ) -> Option<ModPath> {
        let mut base = from.to_vec();
        let mut k = 0;
        while let Some(s) = segs.get(k) {
            match s.as_str() {
                "crate" if k == 0 => base.clear(),
                "self" => {}
                "super" => {
                    base.pop()?;
                }
                _ => break,
            }
            k += 1;
        }
        if k == 0 {
            // A bare path: only a `use` of a child module or of a name this module imports.
            let first = segs.first()?;
            if !is_use || hops > 8 {
                return None;
            }
            if self.modules.get(from).is_some_and(|c| c.contains(first)) {
                base.extend_from_slice(segs);
                return Some(base);
            }
            let &b = self.bindings.get(&(from.to_vec(), first.clone()))?;
            let r = &self.refs[b];
            let mut path = self.absolute(&r.from, &r.segs, r.is_use, hops + 1)?;
            path.extend_from_slice(&segs[1..]);
            return Some(path);
        }
        base.extend_from_slice(&segs[k..]);
        Some(base)
    }

    /// The module an absolute path names: the deepest module it walks through, following
    /// imported names (re-exports) to where they come from.
    fn module_of(&self, abs: &[String], hops: usize) -> ModPath {
        let mut cur: ModPath = Vec::new();
        for (i, seg) in abs.iter().enumerate() {
            if self.modules.get(&cur).is_some_and(|c| c.contains(seg)) {
                cur.push(seg.clone());
                continue;
            }
            if hops < 8
                && let Some(&b) = self.bindings.get(&(cur.clone(), seg.clone()))
                && let Some(mut target) =
                    self.absolute(&self.refs[b].from, &self.refs[b].segs, true, 0)
            {
                target.extend_from_slice(&abs[i + 1..]);
                if target != abs {
                    return self.module_of(&target, hops + 1);
                }
            }
            break;
        }
        cur
    }

    /// Edges among sibling modules: parent → (from child, to child) → references.
    fn edges(&self) -> BTreeMap<ModPath, LevelEdges> {
        let mut edges: BTreeMap<_, BTreeMap<_, Vec<_>>> = BTreeMap::new();
        for r in &self.refs {
            let Some(abs) = self.absolute(&r.from, &r.segs, r.is_use, 0) else {
                continue;
            };
            let to = self.module_of(&abs, 0);
            let common = r.from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == r.from.len() || common == to.len() {
                continue; // same module, or an ancestor/descendant: not an edge
            }
            edges
                .entry(r.from[..common].to_vec())
                .or_default()
                .entry((r.from[common].clone(), to[common].clone()))
                .or_default()
                .push((r.file.clone(), r.line));
        }
        edges
    }

    /// One message per cycle (and per thing the scanner could not follow).
    fn problems(&self, root: &Path) -> Vec<String> {
        let mut problems: Vec<String> = self
            .unreadable
            .iter()
            .map(|(file, line, what)| {
                format!(
                    "{}:{line}: {what}",
                    file.strip_prefix(root).unwrap_or(file).display()
                )
            })
            .collect();
        for (parent, edges) in self.edges() {
            let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in edges.keys() {
                graph.entry(a.clone()).or_default().insert(b.clone());
                graph.entry(b.clone()).or_default();
            }
            for scc in strongly_connected(&graph) {
                if scc.len() < 2 {
                    continue;
                }
                let scope = scope(&parent);
                let mut msg = format!(
                    "modules under `{scope}` import each other in a cycle: {}\n",
                    shortest_cycle(&graph, &scc).join(" -> ")
                );
                if scc.len() > 2 {
                    let _ = writeln!(msg, "    all modules in this cycle: {}", scc.join(", "));
                    let pairs: Vec<String> = edges
                        .keys()
                        .filter(|(a, b)| a < b && edges.contains_key(&(b.clone(), a.clone())))
                        .map(|(a, b)| format!("{a} <-> {b}"))
                        .collect();
                    if !pairs.is_empty() {
                        let _ = writeln!(msg, "    direct back-and-forth: {}", pairs.join(", "));
                    }
                }
                let _ = writeln!(msg, "    references (one per edge):");
                for ((a, b), refs) in &edges {
                    if scc.contains(a) && scc.contains(b) {
                        let (file, line) = &refs[0];
                        let more = match refs.len() {
                            1 => String::new(),
                            n => format!(" (+{} more)", n - 1),
                        };
                        let file = file.strip_prefix(root).unwrap_or(file);
                        let _ = writeln!(msg, "      {a} -> {b}: {}:{line}{more}", file.display());
                    }
                }
                problems.push(msg);
            }
        }
        problems
    }
}

/// `crate` or `crate::a::b`.
fn scope(module: &[String]) -> String {
    std::iter::once("crate")
        .chain(module.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("::")
}

/// A leaf of a `use` tree: its full path, the name it binds (if any), and its line.
type UseLeaf = (Vec<String>, Option<String>, usize);

/// Parses a `use` tree starting at `pos`, appending its leaves; stops before `;`.
fn parse_use_tree(toks: &[Token], pos: &mut usize, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    let mut segs = prefix;
    let mut alias = None;
    while let Some(t) = toks.get(*pos) {
        match &t.kind {
            Tok::PathSep | Tok::Punct('$') => *pos += 1,
            Tok::Ident(s) if s == "as" => {
                if let Some(Tok::Ident(a)) = toks.get(*pos + 1).map(|t| &t.kind) {
                    alias = Some(a.clone());
                }
                *pos += 2;
                break;
            }
            Tok::Ident(s) => {
                segs.push(s.clone());
                *pos += 1;
            }
            Tok::Punct('{') => {
                *pos += 1;
                while let Some(t) = toks.get(*pos) {
                    match t.kind {
                        Tok::Punct('}') => {
                            *pos += 1;
                            break;
                        }
                        Tok::Punct(',') => *pos += 1,
                        Tok::Punct(';') => break,
                        _ => {
                            let before = *pos;
                            parse_use_tree(toks, pos, segs.clone(), out);
                            if *pos == before {
                                *pos += 1;
                            }
                        }
                    }
                }
                return;
            }
            Tok::Punct('*') => {
                *pos += 1;
                out.push((segs, None, t.line));
                return;
            }
            _ => break,
        }
    }
    let line = toks.get(pos.saturating_sub(1)).map_or(0, |t| t.line);
    if segs.last().is_some_and(|s| s == "self") {
        segs.pop();
    }
    let bind = match alias {
        Some(a) if a == "_" => None,
        Some(a) => Some(a),
        None => segs.last().cloned(),
    };
    if !segs.is_empty() {
        out.push((segs, bind, line));
    }
}

/// Whether attribute tokens (inside `#[…]`) are exactly `cfg(test)`.
fn is_cfg_test(attr: &[Token]) -> bool {
    let kinds: Vec<&Tok> = attr.iter().map(|t| &t.kind).collect();
    matches!(
        kinds.as_slice(),
        [Tok::Ident(c), Tok::Punct('('), Tok::Ident(t), Tok::Punct(')')] if c == "cfg" && t == "test"
    )
}

/// The index of the bracket closing the one at `open` (or the last token).
fn matching(toks: &[Token], open: usize) -> usize {
    let mut depth = 0i64;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t.kind {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len().saturating_sub(1)
}

/// The index after the item starting at `i`: past its `;` or its closing `}`.
fn skip_item(toks: &[Token], i: usize) -> usize {
    let mut depth = 0i64;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t.kind {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
                if depth < 0 {
                    return j; // the enclosing block ends: leave its `}` to the caller
                }
            }
            Tok::Punct(';') if depth == 0 => return j + 1,
            _ => {}
        }
    }
    toks.len()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string, char or number literal (contents dropped).
    Lit,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    line: usize,
}

/// Splits Rust source into identifiers, `::` and punctuation, dropping comments and the
/// contents of literals; lifetimes lex as a plain identifier.
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips a quoted string whose opening `"` is at `i`; returns the index after it.
    let skip_str = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skips a char literal whose opening `'` is at `i`, or a lifetime's `'`.
    let skip_char = |i: usize| {
        if at(i + 1) == '\\' {
            let mut j = i + 3;
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            (j + 1, true)
        } else if at(i + 2) == '\'' {
            (i + 3, true)
        } else {
            (i + 1, false) // a lifetime: its name lexes as an identifier
        }
    };
    while i < c.len() {
        let ch = c[i];
        let start_line = line;
        match ch {
            '\n' => {
                line += 1;
                i += 1;
            }
            _ if ch.is_whitespace() => i += 1,
            '/' if at(i + 1) == '/' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => {
                i = skip_str(i, &mut line);
                out.push(Token {
                    kind: Tok::Lit,
                    line: start_line,
                });
            }
            '\'' => {
                let (next, literal) = skip_char(i);
                i = next;
                if literal {
                    out.push(Token {
                        kind: Tok::Lit,
                        line,
                    });
                }
            }
            ':' if at(i + 1) == ':' => {
                out.push(Token {
                    kind: Tok::PathSep,
                    line,
                });
                i += 2;
            }
            _ if ch.is_alphabetic() || ch == '_' => {
                let mut j = i;
                while j < c.len() && (c[j].is_alphanumeric() || c[j] == '_') {
                    j += 1;
                }
                let word: String = c[i..j].iter().collect();
                let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
                if raw_prefix && (at(j) == '"' || (at(j) == '#' && matches!(at(j + 1), '#' | '"')))
                {
                    // Raw string: r"…", r#"…"#, …
                    let hashes = c[j..].iter().take_while(|&&h| h == '#').count();
                    let mut k = j + hashes + 1;
                    loop {
                        if k >= c.len() {
                            break;
                        }
                        if c[k] == '"'
                            && c[k + 1..]
                                .iter()
                                .take(hashes)
                                .filter(|&&h| h == '#')
                                .count()
                                == hashes
                        {
                            k += 1 + hashes;
                            break;
                        }
                        if c[k] == '\n' {
                            line += 1;
                        }
                        k += 1;
                    }
                    i = k;
                    out.push(Token {
                        kind: Tok::Lit,
                        line: start_line,
                    });
                } else if word == "r" && at(j) == '#' {
                    // Raw identifier: r#type
                    let mut k = j + 1;
                    while k < c.len() && (c[k].is_alphanumeric() || c[k] == '_') {
                        k += 1;
                    }
                    out.push(Token {
                        kind: Tok::Ident(c[j + 1..k].iter().collect()),
                        line,
                    });
                    i = k;
                } else if matches!(word.as_str(), "b" | "c") && at(j) == '"' {
                    i = skip_str(j, &mut line);
                    out.push(Token {
                        kind: Tok::Lit,
                        line: start_line,
                    });
                } else if word == "b" && at(j) == '\'' {
                    i = skip_char(j).0;
                    out.push(Token {
                        kind: Tok::Lit,
                        line,
                    });
                } else {
                    out.push(Token {
                        kind: Tok::Ident(word),
                        line,
                    });
                    i = j;
                }
            }
            _ if ch.is_ascii_digit() => {
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push(Token {
                    kind: Tok::Lit,
                    line,
                });
            }
            _ => {
                out.push(Token {
                    kind: Tok::Punct(ch),
                    line,
                });
                i += 1;
            }
        }
    }
    out
}

// =============================================================================================
// Graphs
// =============================================================================================

/// Tarjan's strongly connected components, each sorted.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'g str, usize>,
        low: HashMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            scc.sort();
            s.out.push(scc);
        }
    }
    let mut s = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// A shortest cycle through the first node of `scc`, staying inside it: `[a, b, …, a]`.
fn shortest_cycle(graph: &BTreeMap<String, BTreeSet<String>>, scc: &[String]) -> Vec<String> {
    let start = &scc[0];
    let mut prev: HashMap<&String, &String> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flatten() {
            if !scc.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start.clone()];
                let mut cur = v;
                while cur != start {
                    path.push(cur.clone());
                    cur = prev[cur];
                }
                path.push(start.clone());
                path.reverse();
                return path;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    scc.to_vec()
}
