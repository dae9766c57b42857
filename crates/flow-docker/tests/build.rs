//! The build context: `.dockerignore` as the Docker documentation describes it (the examples
//! of "Build context › .dockerignore files"), and the tar sent to the engine.

use flow_docker::build::{context_tar, BuildContextError, DockerIgnore};

#[test]
fn dockerignore_follows_the_documented_examples() {
    let ignore = DockerIgnore::parse("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
    assert!(ignore.excludes("somedir/temporary.txt"));
    assert!(ignore.excludes("somedir/temp"));
    assert!(ignore.excludes("somedir/subdir/temporary.txt"));
    assert!(ignore.excludes("tempa"));
    assert!(
        !ignore.excludes("temporary.txt"),
        "*/temp* is one level below the root"
    );
    assert!(!ignore.excludes("tempab"));

    let ignore = DockerIgnore::parse("**/*.go\n");
    assert!(ignore.excludes("main.go"));
    assert!(ignore.excludes("a/b/c.go"));
    assert!(!ignore.excludes("a/b/c.rs"));

    let ignore = DockerIgnore::parse("*.md\n!README.md\n");
    assert!(ignore.excludes("CHANGES.md"));
    assert!(!ignore.excludes("README.md"));

    let ignore = DockerIgnore::parse("*.md\n!README*.md\nREADME-secret.md\n");
    assert!(ignore.excludes("CHANGES.md"));
    assert!(!ignore.excludes("README-public.md"));
    assert!(
        ignore.excludes("README-secret.md"),
        "the last matching line decides"
    );

    let ignore = DockerIgnore::parse("/build\nnode_modules\n");
    assert!(
        ignore.excludes("build/out.o"),
        "an excluded directory excludes what it holds"
    );
    assert!(ignore.excludes("node_modules"));
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    let mut names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|entry| entry.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn the_context_tar_leaves_out_what_dockerignore_excludes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/generated")).unwrap();
    std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
    for (name, text) in [
        ("Dockerfile.prod", "FROM scratch\n"),
        (
            ".dockerignore",
            "node_modules\n*.log\nsrc/generated\n!src/generated/keep.txt\nDockerfile.prod\n",
        ),
        ("src/main.rs", "fn main() {}\n"),
        ("src/generated/drop.txt", "x"),
        ("src/generated/keep.txt", "x"),
        ("node_modules/pkg/index.js", "x"),
        ("debug.log", "x"),
    ] {
        std::fs::write(root.join(name), text).unwrap();
    }
    let tar = context_tar(root, "Dockerfile.prod").unwrap();
    let names = tar_names(&tar);
    assert_eq!(
        names,
        [
            ".dockerignore",
            "Dockerfile.prod",
            "src",
            "src/generated/keep.txt",
            "src/main.rs",
        ],
        "the Dockerfile and .dockerignore are always sent"
    );

    assert!(matches!(
        context_tar(&root.join("missing"), "Dockerfile"),
        Err(BuildContextError::NoContext { .. })
    ));
    let error = context_tar(root, "Dockerfile").unwrap_err();
    assert!(
        matches!(error, BuildContextError::NoDockerfile { .. })
            && error.to_string().contains("build.dockerfile"),
        "{error}"
    );
}
