//! The built-in host `local`: commands through `sh -c` on this machine, files
//! through the local filesystem.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use sandboxer_core::duration::format_duration;
use sandboxer_core::hosts::LOCAL;
use sandboxer_core::transport::{ExecOutput, Transport, Utf8Path, Utf8PathBuf};
use sandboxer_core::{Error, ErrorKind, Result};
use tokio::io::AsyncWriteExt as _;

/// The transport of the built-in host `local` (address `127.0.0.1`).
///
/// - `exec` runs `sh -c SCRIPT` in its own process group, with stdin from
///   `/dev/null` unless input is given, stdout and stderr captured. When the
///   command timeout passes, or the call is dropped (cancelled) before the
///   script ends, the whole process group is killed. A script that starts
///   something meant to outlive it must detach it (`setsid`, or at least
///   redirect its stdio: `exec` returns only when stdout and stderr close).
/// - `write_file` and `copy_file` write a temp file in the target's folder
///   (creating the folders), set the mode (umask does not apply), and rename
///   it over the target: readers see the old or the new file, never a part.
///   They do not fsync: venues and work folders are not meant to survive a
///   power cut.
/// - `read_file` of a missing file (or one under a non-folder) is `None`.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    name: String,
    address: String,
    data_dir: Utf8PathBuf,
    command_timeout: Option<Duration>,
}

impl LocalTransport {
    /// `local` with sandboxer's data folder `data_dir` (made absolute against
    /// the current folder when relative), address `127.0.0.1` and a command
    /// timeout of 10 minutes.
    pub fn new(data_dir: PathBuf) -> Self {
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&data_dir))
                .unwrap_or(data_dir)
        };
        let data_dir = Utf8PathBuf::from(match data_dir.to_string_lossy().trim_end_matches('/') {
            "" => "/".to_string(),
            d => d.to_string(),
        });
        LocalTransport {
            name: LOCAL.to_string(),
            address: "127.0.0.1".to_string(),
            data_dir,
            command_timeout: Some(Duration::from_secs(600)),
        }
    }

    /// Report another host name (the hosts-file entry this is for).
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Report another address to consumers (e.g. the machine's LAN address).
    pub fn with_address(mut self, address: &str) -> Self {
        self.address = address.to_string();
        self
    }

    /// How long one `exec` may run before its process group is killed and
    /// the call fails with `Timeout`. `Duration::ZERO` means no limit.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }
}

/// Kills the process group of a running script unless disarmed (it ran to
/// the end). While the script's `sh` is not reaped its pid, which is the
/// group id, cannot be reused.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.filter(|p| *p > 1) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn host(&self) -> &str {
        &self.name
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn data_dir(&self) -> &Utf8Path {
        &self.data_dir
    }

    async fn exec(&self, script: &str, stdin: Option<&[u8]>) -> Result<ExecOutput> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("running `sh -c` on {}", self.name), e))?;
        let mut guard = GroupGuard(child.id().map(|p| p as i32));
        let input = child.stdin.take();
        let feed = async move {
            if let (Some(mut w), Some(data)) = (input, stdin) {
                // A script that does not read its input closes the pipe
                // early; that is its business, not an error.
                let _ = w.write_all(data).await;
                let _ = w.shutdown().await;
            }
        };
        let run = async move {
            let ((), out) = tokio::join!(feed, child.wait_with_output());
            out
        };
        let out = match self.command_timeout {
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "a command on {} ran longer than {}; it was killed",
                        self.name,
                        format_duration(limit)
                    ),
                )
            })?,
            None => run.await,
        }
        .map_err(|e| Error::io(format!("waiting for `sh -c` on {}", self.name), e))?;
        guard.disarm();
        let status = match (out.status.code(), out.status.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => -1,
        };
        Ok(ExecOutput {
            status,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let target = PathBuf::from(path);
        let data = data.to_vec();
        blocking(move || sandboxer_core::fsutil::replace(&target, mode, &data))
            .await
            .map_err(|e| Error::io(format!("writing {path} on {}", self.name), e))
    }

    async fn copy_file(&self, local: &Path, path: &str, mode: u32) -> Result<()> {
        let source = local.to_path_buf();
        let target = PathBuf::from(path);
        blocking(move || {
            sandboxer_core::fsutil::replace_with(&target, mode, |f| {
                std::io::copy(&mut std::fs::File::open(&source)?, f).map(drop)
            })
        })
        .await
        .map_err(|e| {
            Error::io(
                format!("copying {} to {path} on {}", local.display(), self.name),
                e,
            )
        })
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let target = PathBuf::from(path);
        let read = blocking(move || match std::fs::read(&target) {
            Ok(data) => Ok(Some(data)),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        });
        read.await
            .map_err(|e| Error::io(format!("reading {path} on {}", self.name), e))
    }
}

/// Run blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("file task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_data_dir_is_made_absolute() {
        let t = LocalTransport::new(PathBuf::from("some/dir/"));
        assert!(t.data_dir().is_absolute(), "{}", t.data_dir());
        assert!(t.data_dir().ends_with("some/dir"), "{}", t.data_dir());
    }

    #[test]
    fn the_root_folder_stays_absolute() {
        assert_eq!(LocalTransport::new(PathBuf::from("/")).data_dir(), "/");
    }

    #[test]
    fn zero_timeout_means_none() {
        let t = LocalTransport::new(PathBuf::from("/x")).with_command_timeout(Duration::ZERO);
        assert_eq!(t.command_timeout, None);
    }
}
