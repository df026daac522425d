//! The proxy image: `proxy.image`, or one built FROM scratch out of this very (static) binary,
//! tagged by a fingerprint of the binary; images of earlier binaries are pruned after a grace.

use std::collections::BTreeMap;
use std::path::Path;

use super::{PROXY_BIN, engine_err};
use crate::config::Config;
use crate::engine::{Engine, labels};
use crate::util::now_unix;

/// The proxy image: `proxy.image`, or one built FROM scratch out of this binary.
pub async fn ensure_proxy_image(engine: &dyn Engine, config: &Config) -> anyhow::Result<String> {
    if let Some(image) = &config.proxy.image {
        return Ok(image.clone());
    }
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the deployctl binary: {e}"))?;
    let tag = self_image_tag(&exe)?;
    if engine.image_exists(&tag).await.map_err(engine_err)? {
        return Ok(tag);
    }
    let binary =
        std::fs::read(&exe).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", exe.display()))?;
    if !is_static_elf(&binary) {
        anyhow::bail!(
            "{} is dynamically linked, so it cannot run in a FROM scratch proxy image\n  hint: build deployctl with the repository's .cargo/config.toml (static), or set proxy.image",
            exe.display()
        );
    }
    let tar = proxy_context_tar(&binary)?;
    let labels = BTreeMap::from([(labels::ROLE.to_string(), "proxy".to_string())]);
    engine
        .build_image_from_tar(tar, &tag, &labels)
        .await
        .map_err(engine_err)?;
    prune_proxy_images(engine, &tag).await;
    Ok(tag)
}

/// How old another binary's proxy image must be before it is pruned: a younger one may belong to a
/// run of another deployctl build that has just built it and is about to create its container.
const PROXY_IMAGE_GRACE_SECS: i64 = 15 * 60;

/// Removes the proxy images of earlier deployctl binaries once unused. By tag, never by id: an
/// untagged image may be another run's build that is about to be tagged; and only once older than
/// `PROXY_IMAGE_GRACE_SECS`, for the same reason. Docker refuses to remove an image a container
/// still uses, so every running proxy keeps its own; those failures are expected and ignored.
async fn prune_proxy_images(engine: &dyn Engine, keep: &str) {
    let Ok(images) = engine.list_images(&[(labels::ROLE, "proxy")]).await else {
        return;
    };
    let cutoff = now_unix() as i64 - PROXY_IMAGE_GRACE_SECS;
    let old_tags = images
        .iter()
        .filter(|i| i.created < cutoff)
        .flat_map(|i| i.tags.iter())
        .filter(|t| t.starts_with("deployctl-proxy:") && t.as_str() != keep);
    for tag in old_tags {
        if engine.remove_image(tag).await.is_ok() {
            tracing::debug!(image = %tag, "removed an unused proxy image");
        }
    }
}

/// The proxy image this binary would build (without building it).
pub fn self_image_name() -> anyhow::Result<String> {
    self_image_tag(&std::env::current_exe()?)
}

/// Tag of the proxy image for this binary: its version plus a fingerprint of size and mtime,
/// so a rebuilt binary gets a new image without hashing the whole file on every run.
fn self_image_tag(exe: &Path) -> anyhow::Result<String> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(exe)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    Ok(format!(
        "deployctl-proxy:{}-{:012x}",
        env!("CARGO_PKG_VERSION"),
        h.finish() & 0xffff_ffff_ffff
    ))
}

/// An ELF without a PT_INTERP program header needs no dynamic loader.
fn is_static_elf(bin: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bin.len() < 64 || &bin[..4] != b"\x7fELF" || bin[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bin[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bin.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != PT_INTERP)
            .unwrap_or(false)
    })
}

fn proxy_context_tar(binary: &[u8]) -> anyhow::Result<Vec<u8>> {
    let dockerfile = format!(
        "FROM scratch\nCOPY deployctl {PROXY_BIN}\nENTRYPOINT [\"{PROXY_BIN}\"]\nCMD [\"proxy\", \"run\"]\n"
    );
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("deployctl", binary, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append_data(&mut header, name, data)?;
    }
    Ok(builder.into_inner()?)
}

/// Copies `image` from one engine to another that lacks it (`wanted`: its id, or the reference
/// when the id is not known): `docker save` streamed into `docker load`, nothing on disk here.
/// Returns the bytes streamed, or None when `to` already had it.
pub async fn ship_image(
    from: &dyn Engine,
    to: &dyn Engine,
    image: &str,
    wanted: &str,
) -> anyhow::Result<Option<u64>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    if to.image_exists(wanted).await.map_err(super::engine_err)? {
        return Ok(None);
    }
    let counted = Arc::new(AtomicU64::new(0));
    let c = counted.clone();
    let tar = futures_util::StreamExt::boxed(futures_util::StreamExt::inspect(
        from.export_image(image),
        move |chunk| {
            if let Ok(b) = chunk {
                c.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        },
    ));
    to.import_image(tar).await.map_err(super::engine_err)?;
    if !to.image_exists(wanted).await.map_err(super::engine_err)? {
        anyhow::bail!(
            "{image} was loaded but {wanted} is not there (the tag moved while it was shipped?)"
        );
    }
    Ok(Some(counted.load(Ordering::Relaxed)))
}
