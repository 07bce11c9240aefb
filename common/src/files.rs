//! Reading the small files a user points the tools at (plans, tokens, PEM): regular files only,
//! bounded in size, so `/dev/zero` or a FIFO gives an error instead of a hang or an allocation
//! without end.

use std::io::Read;
use std::path::Path;

/// Plans are hand-written; the largest seen is a few KiB.
pub const PLAN_LIMIT: u64 = 1 << 20;
/// Tokens and PEM files (a certificate chain is a few KiB).
pub const SECRET_LIMIT: u64 = 256 << 10;

/// Reads `path` whole if it is a regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > limit {
        return Err(format!("{} bytes, more than the {limit} allowed", meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read past the limit.
    file.take(limit + 1).read_to_end(&mut data).map_err(|e| e.to_string())?;
    if data.len() as u64 > limit {
        return Err(format!("more than the {limit} bytes allowed"));
    }
    Ok(data)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, String> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| "not UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_directories_and_large_files() {
        assert_eq!(
            read_bounded(Path::new("/dev/zero"), 10).unwrap_err(),
            "not a regular file"
        );
        assert_eq!(read_bounded(Path::new("/"), 10).unwrap_err(), "not a regular file");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789ab").unwrap();
        assert!(read_bounded(&p, 10).unwrap_err().contains("12 bytes"));
        assert_eq!(read_text(&p, 12).unwrap(), "0123456789ab");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let ok = std::process::Command::new("mkfifo").arg(&p).status().unwrap();
        assert!(ok.success());
        assert_eq!(read_bounded(&p, 10).unwrap_err(), "not a regular file");
    }
}
