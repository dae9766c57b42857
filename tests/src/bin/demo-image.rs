//! `demo-image <tag> <version>`: builds the demo image (`FROM scratch`, the static
//! `demo-server`) through the Docker API, for machines that cannot pull images.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tag, version] = args.as_slice() else {
        eprintln!("usage: demo-image <tag> <version>   e.g. demo-image docker-flow-demo:v1 v1");
        return ExitCode::from(2);
    };
    let docker = flow_tests::fixtures::docker().await;
    match flow_tests::fixtures::build_demo_image(&docker, tag, version).await {
        Ok(()) => {
            println!("built {tag} (DEMO_VERSION={version})");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("demo-image: {error}");
            ExitCode::FAILURE
        }
    }
}
