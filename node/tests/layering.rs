//! The architecture of `node/src`, checked: imports point one way.
//!
//! [`LAYERS`] names the top-level modules of the crate from the bottom up. The test reads every
//! file under `node/src` (except `main.rs`, the binary), finds every path into the crate
//! (`crate::…`, `super::…`, `self::…` and paths through child modules, in `use` declarations and
//! in code), follows re-exports to the file that defines the item, and asserts:
//!
//! 1. every top-level module is in exactly one layer, and every layer entry exists;
//! 2. a module imports only modules of **lower** layers (modules of one layer are independent);
//! 3. the files import each other without a cycle (inside a module too: a `mod.rs` that
//!    re-exports its children may not be imported back by them).
//!
//! Test code (`#[cfg(test)]` items and modules) is not part of the architecture and is skipped;
//! comments and string literals are ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

/// The top-level modules of `node/src`, bottom layer first, each layer with what it is.
const LAYERS: &[(&str, &[&str])] = &[
    ("file helpers", &["util"]),
    (
        "foundations: Ethereum types, signing and beacon API; keys; slashing protection; p2p",
        &["eth", "keys", "slashing", "p2p"],
    ),
    (
        "slot clock; cluster lock; QBFT consensus engine and driver",
        &["clock", "cluster", "consensus"],
    ),
    ("distributed key generation: `dvnode dkg`", &["dkg"]),
    ("duties: identity, kinds, definitions", &["duty"]),
    (
        "values between the stages: decided duty values, signed objects",
        &["value"],
    ),
    ("the duty tracker and the duty DB", &["tracker", "dutydb"]),
    (
        "workflow stages and the validator API",
        &[
            "scheduler",
            "decide",
            "parsig",
            "broadcast",
            "validator_api",
            "web3signer",
        ],
    ),
    (
        "stages that drive the next one; the VC backend; metrics server",
        &[
            "fetcher",
            "sigagg",
            "vc_backend",
            "remote",
            "metrics_server",
        ],
    ),
    ("wiring: `dvnode run`; `dvnode exit`", &["node", "exit"]),
];

#[test]
fn node_src_imports_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    let analysis = analyse(&files);
    let problems = analysis.problems(LAYERS);
    assert!(
        problems.is_empty(),
        "node/src breaks its layering ({} problems):\n{}\n\nLayers, bottom up:\n{}",
        problems.len(),
        problems.join("\n"),
        LAYERS
            .iter()
            .enumerate()
            .map(|(i, (what, mods))| format!("  {i}: {} — {what}", mods.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The check saw the crate: the workflow's known imports are among the edges it found.
    for (from, to) in [
        ("decide", "dutydb"),
        ("dutydb", "value"),
        ("tracker::tracking", "value"),
        ("fetcher", "decide"),
        ("sigagg", "broadcast"),
        ("eth::signing", "eth::config"),
        ("eth::beacon::client", "eth::signing"),
        ("node", "fetcher"),
    ] {
        assert!(
            analysis.edges.keys().any(|(f, t)| f == from && t == to),
            "the check did not see `{from}` import `{to}`: it is reading the crate wrongly"
        );
    }
}

#[test]
fn the_check_catches_cycles_and_upward_imports() {
    let files = vec![
        ("lib.rs", "pub mod low;\npub mod high;\npub mod store;\n"),
        // `low` imports `high` through a re-export in `store`'s mod.rs: upward, and a cycle.
        (
            "low.rs",
            "// crate::high::Ignored in a comment\nuse crate::store::Thing;\npub struct Low;\nfn s() -> &'static str { \"crate::high::Ignored\" }\n#[cfg(test)]\nmod tests { use crate::high::TestOnly; }\n",
        ),
        (
            "high.rs",
            "use crate::{low::Low, store::{self}};\npub struct High { x: crate::low::Low }\n",
        ),
        ("store/mod.rs", "mod inner;\npub use inner::*;\n"),
        (
            "store/inner.rs",
            "pub struct Thing(crate::high::High);\nmod local { use super::super::inner; }\n",
        ),
    ];
    let files: Vec<(String, String)> = files
        .into_iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    let analysis = analyse(&files);
    let edges: BTreeSet<(String, String)> = analysis.edges.keys().cloned().collect();
    let want: BTreeSet<(String, String)> = [
        ("low", "store::inner"),
        ("high", "low"),
        ("high", "store"),
        ("store", "store::inner"),
        ("store::inner", "high"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(edges, want);
    let layers: &[(&str, &[&str])] = &[("a", &["low"]), ("b", &["store"]), ("c", &["high"])];
    let problems = analysis.problems(layers);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("low.rs:2: `low` (layer 0) imports `store` (layer 1)")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("store/inner.rs:1: `store` (layer 1) imports `high` (layer 2)")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("import cycle: ") && p.contains("high → ")),
        "{problems:#?}"
    );
    // A module missing from the layers, and a layer entry that does not exist.
    let partial: &[(&str, &[&str])] = &[("a", &["low", "gone"]), ("c", &["high"])];
    let problems = analysis.problems(partial);
    assert!(problems
        .iter()
        .any(|p| p.contains("`store` is in no layer")));
    assert!(problems.iter().any(|p| p.contains("`gone`")));
}

/// Collects `(path relative to src, text)` of every `.rs` file below `dir`, except `main.rs`.
fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("below src")
                .to_string_lossy()
                .replace('\\', "/");
            if rel != "main.rs" {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((rel, text));
            }
        }
    }
}

/// A module path (`["eth", "beacon"]`); the crate root is empty.
type ModPath = Vec<String>;

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// The module of a file: `a/b.rs` and `a/b/mod.rs` → `a::b`, `lib.rs` → the root.
fn module_of(rel: &str) -> ModPath {
    let stem = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// What the test found.
struct Analysis {
    /// File modules (non-test).
    files: BTreeMap<ModPath, String>,
    /// `(importing file module, imported file module)` → first `file:line` of such an import.
    edges: BTreeMap<(String, String), String>,
}

impl Analysis {
    /// Every break of the rules in the module docs, as one line each.
    fn problems(&self, layers: &[(&str, &[&str])]) -> Vec<String> {
        let mut out = Vec::new();
        let mut layer_of: HashMap<&str, usize> = HashMap::new();
        for (i, (_, mods)) in layers.iter().enumerate() {
            for m in *mods {
                if layer_of.insert(m, i).is_some() {
                    out.push(format!("`{m}` is in more than one layer"));
                }
            }
        }
        let tops: BTreeSet<&str> = self
            .files
            .keys()
            .filter_map(|m| m.first().map(String::as_str))
            .collect();
        for t in &tops {
            if !layer_of.contains_key(t) {
                out.push(format!("`{t}` is in no layer: add it to LAYERS"));
            }
        }
        for m in layer_of.keys() {
            if !tops.contains(m) {
                out.push(format!(
                    "LAYERS names `{m}`, which is not a module of node/src"
                ));
            }
        }
        for ((from, to), at) in &self.edges {
            let (ft, tt) = (top(from), top(to));
            if ft == tt {
                continue;
            }
            if let (Some(&fl), Some(&tl)) = (layer_of.get(ft), layer_of.get(tt)) {
                if tl >= fl {
                    let how = if tl == fl { "the same layer" } else { "upward" };
                    out.push(format!(
                        "{at}: `{ft}` (layer {fl}) imports `{tt}` (layer {tl}): {how} \
                         (`{from}` → `{to}`)"
                    ));
                }
            }
        }
        out.extend(self.cycles());
        out
    }

    /// One line per import cycle among files.
    fn cycles(&self) -> Vec<String> {
        let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (from, to) in self.edges.keys() {
            graph.entry(from).or_default().push(to);
            graph.entry(to).or_default();
        }
        let mut out = Vec::new();
        for component in strongly_connected(&graph) {
            if component.len() < 2 {
                continue;
            }
            let path = cycle_through(&graph, &component);
            let mut steps = Vec::new();
            for w in path.windows(2) {
                let at = &self.edges[&(w[0].to_string(), w[1].to_string())];
                steps.push(format!("{} → {} ({at})", w[0], w[1]));
            }
            out.push(format!("import cycle: {}", steps.join(", ")));
        }
        out
    }
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

/// Tarjan's strongly connected components.
fn strongly_connected<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: HashSet<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, g: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in &g[v] {
            if !s.index.contains_key(w) {
                visit(w, g, s);
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
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut s = State {
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: HashSet::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, graph, &mut s);
        }
    }
    s.out
}

/// A cycle through the first node of `component`, as a closed path.
fn cycle_through<'a>(
    graph: &BTreeMap<&'a str, Vec<&'a str>>,
    component: &[&'a str],
) -> Vec<&'a str> {
    let inside: HashSet<&str> = component.iter().copied().collect();
    let start = component[0];
    // Breadth-first from the start's successors back to it, inside the component.
    let mut prev: HashMap<&str, &str> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &graph[v] {
            if !inside.contains(w) || prev.contains_key(w) {
                continue;
            }
            prev.insert(w, v);
            if w == start {
                let mut path = vec![start];
                let mut at = v;
                while at != start {
                    path.push(at);
                    at = prev[at];
                }
                path.push(start);
                path.reverse();
                return path;
            }
            queue.push_back(w);
        }
    }
    component.to_vec()
}

/// A path found in the source.
struct Ref {
    /// Line (1-based).
    line: usize,
    /// Module the path is written in (file module plus inline modules).
    scope: ModPath,
    /// The path's segments as written (`crate`, `super`, `self` or a first name).
    path: Vec<String>,
}

/// A `use` entry: the name it brings into `scope` (`None`: a glob) and the path it names.
struct Import {
    scope: ModPath,
    name: Option<String>,
    path: Vec<String>,
}

/// What one file declares and references.
#[derive(Default)]
struct Scan {
    refs: Vec<Ref>,
    imports: Vec<Import>,
    /// Items (types, functions, modules, …) defined, by module.
    items: Vec<(ModPath, String)>,
    /// Inline (non-test) modules.
    inline_modules: Vec<ModPath>,
    /// File modules declared under `#[cfg(test)]`.
    test_modules: Vec<ModPath>,
}

fn analyse(files: &[(String, String)]) -> Analysis {
    let mut scans = Vec::new();
    let mut test_modules: HashSet<ModPath> = HashSet::new();
    for (rel, text) in files {
        let module = module_of(rel);
        let scan = scan(&module, text);
        test_modules.extend(scan.test_modules.iter().cloned());
        scans.push((rel.clone(), module, scan));
    }
    // Files below a test-only module are test code.
    scans.retain(|(_, m, _)| !(1..=m.len()).any(|n| test_modules.contains(&m[..n])));
    let mut r = Resolver::default();
    for (rel, m, scan) in &scans {
        r.files.insert(m.clone(), rel.clone());
        r.modules.insert(m.clone());
        r.modules.extend(scan.inline_modules.iter().cloned());
        for (scope, item) in &scan.items {
            r.items
                .entry(scope.clone())
                .or_default()
                .insert(item.clone());
        }
    }
    for (_, _, scan) in &scans {
        for i in &scan.imports {
            if let Some(abs) = r.absolute(&i.scope, &i.path) {
                let entry = r.imports.entry(i.scope.clone()).or_default();
                match &i.name {
                    Some(n) => {
                        entry.named.insert(n.clone(), abs);
                    }
                    None => entry.globs.push(abs),
                }
            }
        }
    }
    let mut edges = BTreeMap::new();
    for (rel, m, scan) in &scans {
        for rf in &scan.refs {
            let Some(abs) = r.absolute(&rf.scope, &rf.path) else {
                continue;
            };
            let target = r.resolve(&abs, 0);
            if target == *m || target.is_empty() {
                continue;
            }
            edges
                .entry((show(m), show(&target)))
                .or_insert_with(|| format!("{rel}:{}", rf.line));
        }
    }
    Analysis {
        files: r.files,
        edges,
    }
}

#[derive(Default)]
struct Imports {
    named: HashMap<String, ModPath>,
    globs: Vec<ModPath>,
}

/// Name resolution, enough to find the file that defines what a path names.
#[derive(Default)]
struct Resolver {
    files: BTreeMap<ModPath, String>,
    /// File and inline modules.
    modules: HashSet<ModPath>,
    items: HashMap<ModPath, HashSet<String>>,
    imports: HashMap<ModPath, Imports>,
}

impl Resolver {
    /// The absolute path of `path` written in `scope`; `None` for paths outside the crate.
    fn absolute(&self, scope: &[String], path: &[String]) -> Option<ModPath> {
        let first = path.first()?;
        let mut out: ModPath = match first.as_str() {
            "crate" => Vec::new(),
            "self" => scope.to_vec(),
            "super" => {
                let ups = path.iter().take_while(|s| *s == "super").count();
                let mut base = scope.to_vec();
                for _ in 0..ups {
                    base.pop()?;
                }
                base.extend(path[ups..].iter().cloned());
                return Some(base);
            }
            _ => {
                let mut child = scope.to_vec();
                child.push(first.clone());
                if !self.modules.contains(&child) {
                    return None;
                }
                scope.to_vec()
            }
        };
        let skip = usize::from(matches!(first.as_str(), "crate" | "self"));
        out.extend(path[skip..].iter().cloned());
        Some(out)
    }

    /// The file module that defines what the absolute path `abs` names.
    fn resolve(&self, abs: &[String], depth: usize) -> ModPath {
        let mut cur: ModPath = Vec::new();
        for (k, seg) in abs.iter().enumerate() {
            let mut cand = cur.clone();
            cand.push(seg.clone());
            if self.modules.contains(&cand) {
                cur = cand;
                continue;
            }
            if depth < 16 && !self.defines_here(&cur, seg) {
                if let Some(target) = self.reexport(&cur, seg, depth) {
                    let mut next = target;
                    next.extend(abs[k + 1..].iter().cloned());
                    return self.resolve(&next, depth + 1);
                }
            }
            break;
        }
        self.file_of(&cur)
    }

    fn defines_here(&self, m: &ModPath, name: &str) -> bool {
        self.items.get(m).is_some_and(|i| i.contains(name))
    }

    /// Where `name`, brought into `m` by a `use`, comes from.
    fn reexport(&self, m: &ModPath, name: &str, depth: usize) -> Option<ModPath> {
        let imports = self.imports.get(m)?;
        if let Some(p) = imports.named.get(name) {
            return Some(p.clone());
        }
        imports.globs.iter().find_map(|g| {
            let mut p = g.clone();
            p.push(name.to_string());
            (self.modules.contains(&p)
                || self.defines_here(g, name)
                || (depth < 16 && self.reexport(g, name, depth + 1).is_some()))
            .then_some(p)
        })
    }

    /// The file module containing module `m` (its longest file-module prefix).
    fn file_of(&self, m: &[String]) -> ModPath {
        (0..=m.len())
            .rev()
            .map(|n| m[..n].to_vec())
            .find(|p| self.files.contains_key(p))
            .unwrap_or_default()
    }
}

/// A token of stripped source: an identifier/number/keyword, `::`, or one punctuation char.
struct Token {
    text: String,
    line: usize,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Blanks comments and string/char literals (keeping line breaks) and `#[cfg(test)]` items.
/// Returns the code and the `mod NAME;` declarations that were test-only.
fn strip(text: &str) -> (Vec<char>, Vec<String>) {
    let c: Vec<char> = text.chars().collect();
    let mut out = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident_char(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let (mut depth, mut j) = (0usize, i);
            while j < c.len() {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let s = if c[i] == 'b' { i + 2 } else { i + 1 };
            let hashes = (s..c.len()).take_while(|&j| c[j] == '#').count();
            c.get(s + hashes) == Some(&'"')
        } {
            let s = if c[i] == 'b' { i + 2 } else { i + 1 };
            let hashes = (s..c.len()).take_while(|&j| c[j] == '#').count();
            let body = s + hashes + 1;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let end = (body..c.len())
                .find(|&j| c[j..].starts_with(&close))
                .map_or(c.len(), |j| j + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if c[i] == '\''
            && (!prev_ident || (c[i - 1] == 'b' && (i < 2 || !is_ident_char(c[i - 2]))))
        {
            // A char literal ('a', '\n', '\u{1F600}'), else a lifetime or label.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 3..c.len()).find(|&j| c[j] == '\'').map(|j| j + 1)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(e) => {
                    blank(&mut out, i, e);
                    i = e;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    let mut test_mods = Vec::new();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= out.len() {
        if out[i..].starts_with(&marker) {
            let end = item_end(&out, i + marker.len());
            let item: String = out[i + marker.len()..end].iter().collect();
            let words: Vec<&str> = item
                .split(|ch: char| !is_ident_char(ch))
                .filter(|w| !w.is_empty())
                .collect();
            if let Some(p) = words.iter().position(|w| *w == "mod") {
                if item.trim_end().ends_with(';') {
                    if let Some(name) = words.get(p + 1) {
                        test_mods.push(name.to_string());
                    }
                }
            }
            for ch in out.iter_mut().take(end).skip(i) {
                if *ch != '\n' {
                    *ch = ' ';
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    (out, test_mods)
}

/// The end of the item starting at `from` (after its attribute): past its `;` or its block.
fn item_end(c: &[char], from: usize) -> usize {
    let (mut depth, mut i) = (0i32, from);
    while i < c.len() {
        match c[i] {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ';' if depth == 0 => return i + 1,
            '{' if depth == 0 => {
                let mut braces = 0;
                for (j, &ch) in c.iter().enumerate().skip(i) {
                    match ch {
                        '{' => braces += 1,
                        '}' => {
                            braces -= 1;
                            if braces == 0 {
                                return j + 1;
                            }
                        }
                        _ => {}
                    }
                }
                return c.len();
            }
            _ => {}
        }
        i += 1;
    }
    c.len()
}

fn tokens(code: &[char]) -> Vec<Token> {
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < code.len() {
        let ch = code[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident_char(ch) {
            let start = i;
            while i < code.len() && is_ident_char(code[i]) {
                i += 1;
            }
            out.push(Token {
                text: code[start..i].iter().collect(),
                line,
            });
        } else if ch == ':' && code.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

const ITEM_KEYWORDS: &[&str] = &[
    "struct", "enum", "fn", "trait", "type", "const", "static", "union", "mod",
];

fn scan(module: &ModPath, text: &str) -> Scan {
    let (code, test_mods) = strip(text);
    let t = tokens(&code);
    let mut s = Scan {
        test_modules: test_mods
            .into_iter()
            .map(|name| {
                let mut m = module.clone();
                m.push(name);
                m
            })
            .collect(),
        ..Scan::default()
    };
    let text_at = |i: usize| t.get(i).map_or("", |tok| tok.text.as_str());
    let is_name = |i: usize| {
        let w = text_at(i);
        w.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    };
    // Inline modules open at brace depth `.1`.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending_mod: Option<String> = None;
    let mut depth = 0usize;
    let scope = |inline: &[(String, usize)]| {
        let mut m = module.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    let mut i = 0;
    while i < t.len() {
        let w = text_at(i);
        match w {
            "{" => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                    s.inline_modules.push(scope(&inline));
                }
                i += 1;
                continue;
            }
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            _ => {}
        }
        if ITEM_KEYWORDS.contains(&w) && is_name(i + 1) && !ITEM_KEYWORDS.contains(&text_at(i + 1))
        {
            let name = text_at(i + 1).to_string();
            s.items.push((scope(&inline), name.clone()));
            if w == "mod" && text_at(i + 2) == "{" {
                pending_mod = Some(name);
            }
            i += 2;
            continue;
        }
        let after_path = text_at(i.wrapping_sub(1)) == "::" || text_at(i.wrapping_sub(1)) == "$";
        if w == "use" {
            let mut entries = Vec::new();
            let end = use_tree(&t, i + 1, Vec::new(), &mut entries);
            let here = scope(&inline);
            for (path, name) in entries {
                s.imports.push(Import {
                    scope: here.clone(),
                    name,
                    path: path.clone(),
                });
                s.refs.push(Ref {
                    line: t[i].line,
                    scope: here.clone(),
                    path,
                });
            }
            i = end.max(i + 1);
            continue;
        }
        if is_name(i) && !after_path && text_at(i + 1) == "::" {
            let mut entries = Vec::new();
            let end = use_tree(&t, i, Vec::new(), &mut entries);
            for (path, _) in entries {
                s.refs.push(Ref {
                    line: t[i].line,
                    scope: scope(&inline),
                    path,
                });
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    s
}

/// Parses a use tree (or a plain path) at `i`; pushes `(path, name it binds)` for each leaf
/// (`None` for a glob) and returns the index after it.
fn use_tree(
    t: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    let text_at = |i: usize| t.get(i).map_or("", |tok| tok.text.as_str());
    if text_at(i) == "::" {
        i += 1;
    }
    match text_at(i) {
        "{" => {
            i += 1;
            while i < t.len() && text_at(i) != "}" {
                let before = i;
                i = use_tree(t, i, prefix.clone(), out);
                // Past anything the grammar does not know, to the next entry.
                while i < t.len() && text_at(i) != "," && text_at(i) != "}" {
                    i += 1;
                }
                if text_at(i) == "," {
                    i += 1;
                }
                if i == before {
                    i += 1;
                }
            }
            i + 1
        }
        "*" => {
            out.push((prefix, None));
            i + 1
        }
        w if !w.is_empty() && w.chars().all(is_ident_char) => {
            prefix.push(w.to_string());
            i += 1;
            let next = text_at(i + 1);
            let continues =
                matches!(next, "{" | "*") || (!next.is_empty() && next.chars().all(is_ident_char));
            if text_at(i) == "::" && continues {
                return use_tree(t, i + 1, prefix, out);
            }
            let mut name = prefix.last().cloned();
            if name.as_deref() == Some("self") {
                prefix.pop();
                name = prefix.last().cloned();
            }
            if text_at(i) == "as" {
                name = Some(text_at(i + 1).to_string());
                i += 2;
            }
            out.push((prefix, name));
            i
        }
        _ => i,
    }
}
