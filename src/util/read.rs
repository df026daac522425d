//! Reading the small files deployctl reads itself (deploy.toml, the environment's file, the env
//! file, a Dockerfile, `.dockerignore`): regular files only, at most [`MAX_CONFIG_FILE`] bytes,
//! never blocking on a FIFO or device.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest configuration file deployctl reads.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Reads `path` (following symlinks) if it is a regular file of at most [`MAX_CONFIG_FILE`]
/// bytes. The file is opened non-blocking, so a FIFO is refused instead of waiting for a writer.
/// A missing file keeps [`io::ErrorKind::NotFound`]; other refusals say why in the message.
pub fn read_config_file(path: &Path) -> io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file (a {})", kind_of(&meta.file_type())),
        ));
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "larger than 1 MiB, the limit for a configuration file",
        )
    };
    if meta.len() > MAX_CONFIG_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: read one byte more than allowed to notice.
    file.take(MAX_CONFIG_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(too_large());
    }
    Ok(bytes)
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_only_and_at_most_1_mib() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "a = 1\n").unwrap();
        assert_eq!(read_config_file(&ok).unwrap(), b"a = 1\n");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_FILE as usize + 1]).unwrap();
        let e = read_config_file(&big).unwrap_err();
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let exact = dir.path().join("exact.toml");
        std::fs::write(&exact, vec![b'#'; MAX_CONFIG_FILE as usize]).unwrap();
        assert!(read_config_file(&exact).is_ok());
        let e = read_config_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_config_file(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let missing = read_config_file(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
