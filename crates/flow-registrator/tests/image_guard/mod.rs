//! Removal of a per-test image, also when the test panics.

use bollard::query_parameters::RemoveImageOptions;
use flow_tests::fixtures::docker;

/// Removes the image `tag` when dropped (after the containers using it are gone).
pub struct ImageGuard(pub String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let tag = self.0.clone();
        let removal = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up")
                .block_on(async {
                    let docker = docker().await;
                    docker
                        .remove_image(&tag, None::<RemoveImageOptions>, None)
                        .await
                        .map(|_| ())
                })
        });
        if let Ok(Err(error)) = removal.join() {
            eprintln!("clean-up of image {}: {error}", self.0);
        }
    }
}
