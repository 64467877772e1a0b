//! The documentation holds together: every relative link in README.md,
//! CONTRIBUTING.md, docs/ and the child library's README points at a file
//! that exists (and at a heading that exists, where it names one), and
//! every test the guarantees table names exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Markdown files whose links are checked.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![
        root.join("README.md"),
        root.join("CONTRIBUTING.md"),
        root.join("crates/supervisor-child/README.md"),
        root.join("systemd/README.md"),
    ];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 8, "docs/ has its chapters: {docs:?}");
    files.extend(docs);
    files
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// A heading's anchor as the forges make it: lower case, punctuation but
/// `-` and `_` dropped, spaces made hyphens; a repeated one gets `-1`,
/// `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_default();
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_points_at_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text =
            std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            if !path.exists() {
                broken.push(format!("{}: {target}: no such file", doc.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let linked = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&linked).contains(anchor) {
                    broken.push(format!("{}: {target}: no such heading", doc.display()));
                }
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} links found: is the parser right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_test_the_guarantees_table_names_exists() {
    let root = root();
    let table = std::fs::read_to_string(root.join("docs/guarantees.md")).unwrap();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut named = 0;
    let mut missing = Vec::new();
    for line in table.lines().filter(|l| l.starts_with('|')) {
        let Some(cell) = line.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for quoted in cell.split('`').skip(1).step_by(2) {
            let Some((file, name)) = quoted.split_once("::") else {
                continue;
            };
            named += 1;
            // `file::test` for tests/FILE.rs, `module::tests::test` for a
            // unit test in src/MODULE.rs or src/MODULE/tests.rs,
            // `module::tests::part::test` for one in src/MODULE/tests/PART.rs.
            let (path, name) = name.rsplit_once("::").unwrap_or(("", name));
            let source = std::fs::read_to_string(tests.join(format!("{file}.rs")))
                .or_else(|_| std::fs::read_to_string(tests.join(format!("../src/{file}.rs"))))
                .or_else(|_| std::fs::read_to_string(tests.join(format!("../src/{file}/tests.rs"))))
                .or_else(|_| {
                    let part = path.replace("::", "/");
                    std::fs::read_to_string(tests.join(format!("../src/{file}/{part}.rs")))
                })
                .unwrap_or_default();
            if !source.contains(&format!("fn {name}(")) {
                missing.push(quoted.to_string());
            }
        }
    }
    assert!(
        named > 20,
        "only {named} tests named: is the table's format right?"
    );
    assert!(missing.is_empty(), "named but not found: {missing:?}");
}

#[test]
fn the_anchor_rules_match_the_forges() {
    let a = anchors(
        "# Hand-off modes: steer and shared\n## `--ready` and probes\n## Usage\n## Usage\n```\n# not a heading\n```\n",
    );
    let want: BTreeSet<String> = [
        "hand-off-modes-steer-and-shared",
        "--ready-and-probes",
        "usage",
        "usage-1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(a, want);
}
