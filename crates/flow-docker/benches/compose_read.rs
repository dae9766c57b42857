//! Reading a Compose file is linear in its size: the same generated file at 1×, 2× and 4× the
//! services, read with `ComposeProject::load` (YAML, merge keys, interpolation, `extends`,
//! every service walked), in the same run. Prints the medians and the ratios 2×/1× and 4×/1×
//! (linear is 2.0 and 4.0; quadratic would be 4 and 16).
//!
//! Run with `cargo bench -p flow-docker --bench compose_read`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use flow_docker::compose::ComposeProject;

/// Services in the 1× file (about 2 MB: the 4× file stays under the 10 MB limit).
const SERVICES: usize = 3_000;
const ROUNDS: usize = 5;

/// A file of `services` services in the shapes real files use: an anchor merged in, `extends`,
/// interpolation, short and long ports and volumes, a healthcheck, labels and environment.
fn compose_text(services: usize) -> String {
    let mut text = String::from(
        "x-common: &common\n  restart: always\n  labels:\n    team: core\nservices:\n  base:\n    image: base:${TAG:-1}\n    environment:\n      FROM_BASE: \"1\"\n",
    );
    for n in 0..services {
        write!(
            text,
            "  svc{n}:\n    <<: *common\n    extends: base\n    image: app{n}:${{TAG:-v1}}\n    command: [\"serve\", \"--id\", \"{n}\"]\n    environment:\n      - ID={n}\n      - URL=http://svc{n}:8080/$${{path}}\n    ports:\n      - \"8080\"\n      - target: 9090\n        protocol: tcp\n    volumes:\n      - ./data/{n}:/data:ro\n      - cache{n}:/cache\n    healthcheck:\n      test: [\"CMD\", \"/check\", \"{n}\"]\n      interval: 10s\n      retries: 3\n    depends_on: [base]\n"
        )
        .expect("writing to a String");
    }
    text
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let sizes = [1, 2, 4];
    let files: Vec<(usize, std::path::PathBuf, usize)> = sizes
        .iter()
        .map(|&factor| {
            let text = compose_text(SERVICES * factor);
            let path = dir.path().join(format!("compose-{factor}x.yml"));
            std::fs::write(&path, &text).expect("writing the generated file");
            (factor, path, text.len())
        })
        .collect();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len()];
    for round in 0..ROUNDS {
        // Alternate the order so that no size always runs on a warmer cache.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..sizes.len()).collect()
        } else {
            (0..sizes.len()).rev().collect()
        };
        for index in order {
            let started = Instant::now();
            let project = ComposeProject::load(&files[index].1).expect("the generated file loads");
            samples[index].push(started.elapsed());
            assert_eq!(project.services.len(), SERVICES * files[index].0 + 1);
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    for ((factor, _, bytes), took) in files.iter().zip(&medians) {
        println!(
            "{factor}x: {} services, {:.1} MB, median of {ROUNDS}: {:.1} ms",
            SERVICES * factor,
            *bytes as f64 / 1e6,
            took.as_secs_f64() * 1e3
        );
    }
    println!(
        "ratio 2x/1x {:.2} (linear 2.0), 4x/1x {:.2} (linear 4.0)",
        medians[1].as_secs_f64() / medians[0].as_secs_f64(),
        medians[2].as_secs_f64() / medians[0].as_secs_f64()
    );
}
