//! A data directory whose writes fail as a read-only file system's: a clear 503, nothing
//! acknowledged is lost, and the node takes work again once writes work. A test binary of its
//! own: the failure is injected into every file write of this process, so no other test may
//! share it.

mod helpers;

use std::process::Command;

use helpers::{
    assert_all_stored, assert_stored_after_restart, mixed_tx, post_accepted, post_tx,
    post_until_accepted_again, post_until_refused, spawn_app_at,
};

/// Every write, sync and allocation this process makes on files fails with EROFS while it
/// lives, as on a file system remounted read-only after an error (`errors=remount-ro`): strace
/// attached to this test process injects the error into those syscalls (sockets, eventfds and
/// reads are left alone). A mount cannot be made read-only under a server that holds files open
/// for writing (the kernel answers EBUSY), so the syscalls are failed instead. Detached when
/// dropped: SIGTERM makes strace detach cleanly, and the syscalls work again.
struct ReadOnlyWrites {
    strace: std::process::Child,
}

impl ReadOnlyWrites {
    const SYSCALLS: &'static str = "pwrite64,pwritev,pwritev2,fdatasync,fsync,fallocate,ftruncate";

    fn inject() -> ReadOnlyWrites {
        let strace = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null"])
            .arg(format!("-etrace={}", Self::SYSCALLS))
            .arg(format!("-einject={}:error=EROFS", Self::SYSCALLS))
            .arg("-p")
            .arg(std::process::id().to_string())
            .spawn()
            .expect("this test needs strace (scripts/test installs it)");
        ReadOnlyWrites { strace }
    }
}

impl Drop for ReadOnlyWrites {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.strace.id().to_string()])
            .status();
        let _ = self.strace.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_directory_is_refused_clearly_and_the_node_recovers_when_writable() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_at(dir.path(), None).await;
    let mut acked: Vec<String> = Vec::new();
    let mut next = 0usize;
    post_accepted(&app, "ro", 20, &mut acked, &mut next).await;
    let read_only = ReadOnlyWrites::inject();
    // Keep sending: what is acknowledged must be stored, the refusal a clear 503. Requests
    // answered before strace has attached to every thread are acknowledged as usual.
    let refused =
        post_until_refused(&app, "ro", "storage_unavailable", &mut acked, &mut next).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was recorded"),
        "{refused}"
    );
    // Still refused while read-only, and the refused transaction is not stored.
    let (status, body, _) = post_tx(&app, &mixed_tx("ro-refused", 12, 0)).await;
    assert_eq!(status, 503, "{body}");
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "not ready while storage fails: {ready}");
    // Writable again: the node takes work again without a restart.
    drop(read_only);
    post_until_accepted_again(&app, &mixed_tx("ro-after", 12, 0), "writes worked again").await;
    let (status, _) = app.get("/v1/transactions/ro-refused-0").await;
    assert_eq!(status, 404, "a refused transaction was stored");
    assert_all_stored(&app, &acked).await;
    app.stop().await;
    // And after a restart, everything acknowledged (and the one after) is there.
    assert_stored_after_restart(dir.path(), acked.len() as u64 + 1).await;
}
