//! Work for spare CPU time: threads in the lowest scheduling class the platform has
//! (`SCHED_IDLE` on Linux), for work done ahead in case it is needed — a spare signer's
//! check of a PSBT it may be asked to sign, a coordinator's precomputation for the shares it
//! will check — which must not slow the signing under way when signers and the coordinator
//! share a machine's cores.

/// Spawns `work` on a new thread named `name` in the lowest scheduling class (left at the
/// normal one when the platform refuses).
///
/// # Errors
/// The thread cannot be spawned.
pub fn spawn(
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lowest_priority();
            work();
        })
}

fn lowest_priority() {
    use thread_priority::*;
    #[cfg(target_os = "linux")]
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    #[cfg(not(target_os = "linux"))]
    let idle = set_current_thread_priority(ThreadPriority::Min);
    if let Err(e) = idle {
        tracing::debug!("cannot lower a background thread's priority: {e:?}");
    }
}
