//! Moving an image between engines without a registry: `docker save` as a stream on one engine,
//! `docker load` of that stream on another. Nothing is written to disk on the machine running
//! deployctl; bytes flow from one API connection to the other.

use bollard::query_parameters::ImportImageOptionsBuilder;
use futures_util::StreamExt;

use crate::engine::{EngineError, EngineResult, ImageTar};

use super::*;

impl DockerEngine {
    pub(super) fn export(&self, reference: &str) -> ImageTar {
        // The save of a large image outlasts the usual per-call deadline.
        let docker = self.docker.clone().with_timeout(BUILD_TIMEOUT);
        let host = self.host.clone();
        docker
            .export_image(reference)
            .map(move |chunk| chunk.map_err(|e| map_error(e, &host)))
            .boxed()
    }

    pub(super) async fn import(&self, tar: ImageTar) -> EngineResult<()> {
        let docker = self.docker.clone().with_timeout(BUILD_TIMEOUT);
        let options = ImportImageOptionsBuilder::new().quiet(true).build();
        let body = tar.map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
        let mut answers = docker.import_image_stream(options, body, None);
        while let Some(answer) = answers.next().await {
            let info = answer.map_err(|e| self.err(e))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api(format!(
                    "loading the image failed: {}",
                    detail.message.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
