//! What deployctl does on the Docker host: read its state (`observe`), run the proxy and talk to
//! it through `docker exec` (there is no admin port) (`proxy`), and build the proxy image from this
//! very binary (`image`). This module keeps what they share: the engine error mapping, ownership
//! checks of the host's objects, the private network, and how the proxy reaches an app container.

pub mod container;
mod image;
mod observe;
mod proxy;

use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::error::Error;
use crate::names::Names;
use crate::proxy::protocol::Target;

/// Kept for the callers that import it from here; the one version is `crate::util::now_unix`.
pub use crate::util::now_unix;
pub use image::{ensure_proxy_image, self_image_name, ship_image};
pub use observe::{AppContainer, Observed, ProxyObserved, observe};
pub use proxy::{
    MAX_REASON_BYTES, ensure_proxy, health_spec, proxy_health, proxy_record, proxy_releases,
    proxy_status, proxy_switch,
};

/// Path of the deployctl binary inside the proxy image.
const PROXY_BIN: &str = "/deployctl";

/// Turns an engine failure into the error that decides the exit code.
/// (The mapping itself is `From<EngineError> for Error`.)
pub fn engine_err(err: EngineError) -> anyhow::Error {
    Error::from(err).into()
}

/// Inspects the container `name` (one of `names`' own) and refuses it when its labels say it belongs
/// to another app or environment. None when it does not exist.
pub async fn owned_container(
    engine: &dyn Engine,
    names: &Names,
    name: &str,
) -> anyhow::Result<Option<crate::engine::ContainerInfo>> {
    let info = engine.inspect_container(name).await.map_err(engine_err)?;
    if let Some(info) = &info {
        crate::names::check_owner(names, "container", name, &info.labels)?;
    }
    Ok(info)
}

/// Creates the private network unless it exists, refusing one that is not ours.
pub async fn ensure_network(engine: &dyn Engine, names: &Names) -> anyhow::Result<()> {
    let network = names.network();
    if let Some(l) = engine.network_labels(&network).await.map_err(engine_err)? {
        crate::names::check_owner(names, "network", &network, &l)?;
    }
    engine
        .ensure_network(&network, &names.labels("network"))
        .await
        .map_err(engine_err)
}

/// How the proxy reaches an app container: its name, resolved by Docker's DNS on the private network.
pub fn target_for(
    config: &Config,
    container: &str,
    version: &str,
    color: crate::names::Color,
) -> Target {
    Target {
        addr: format!("{container}:{}", config.app.port),
        container: container.to_string(),
        version: version.to_string(),
        color,
    }
}
