//! HTTP under `wrk`: the demo's cached item read against bypassed and constant handlers.

pub(crate) fn run(_rt: &tokio::runtime::Runtime) {
    println!("\n## HTTP\n\nnot measured yet");
}
