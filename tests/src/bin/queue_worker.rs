//! A queue worker process for the tests to kill (`SIGKILL`) or stall (`SIGSTOP`) for real.
//!
//! `queue_worker (--redis URL | --cluster URL,URL…) --queue NAME [--concurrency N]
//! [--lease-ms N] [--keep N] [--mode count|stall]`
//!
//! - `count`: each job adds 1 to field `{id}` of hash `runs:{NAME}` (so a test sees how many
//!   times each job ran), then completes.
//! - `stall`: each job prints `started {id} {attempt}` and waits for a `finish` line on stdin.
//!
//! Prints `ready` once its worker runs, and `stats completed=… rejected=…` whenever those
//! change. Exits when its stdin closes (the test is gone).

use std::{io::BufRead, sync::Arc, time::Duration};

use cached_runtime::{
    Redis,
    connection::cmd,
    queue::{Job, JobError, Queue},
};
use tokio::sync::Notify;

struct Args {
    redis: Option<String>,
    cluster: Option<String>,
    queue: String,
    concurrency: usize,
    lease: Duration,
    keep: u64,
    stall: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        redis: None,
        cluster: None,
        queue: String::new(),
        concurrency: 8,
        lease: Duration::from_secs(2),
        keep: 0,
        stall: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--redis" => args.redis = Some(value()?),
            "--cluster" => args.cluster = Some(value()?),
            "--queue" => args.queue = value()?,
            "--concurrency" => {
                args.concurrency = usize::try_from(number(value()?)?).map_err(|e| e.to_string())?;
            }
            "--lease-ms" => args.lease = Duration::from_millis(number(value()?)?),
            "--keep" => args.keep = number(value()?)?,
            "--mode" => args.stall = value()? == "stall",
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = parse()?;
    let builder = match (&args.redis, &args.cluster) {
        (Some(url), None) => Redis::builder(url.clone()),
        (None, Some(nodes)) => Redis::cluster(nodes.split(',').map(str::to_owned)),
        _ => return Err("give --redis or --cluster".to_owned()),
    };
    let redis = builder
        .command_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let queue: Queue<u64> = Queue::builder(&redis, args.queue.clone())
        .keep_completed(args.keep, Duration::ZERO)
        .build()
        .await
        .map_err(|e| e.to_string())?;

    // Stdin: `finish` releases stalled handlers; end of input ends the process.
    let finish = Arc::new(Notify::new());
    let released = Arc::clone(&finish);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "finish" => released.notify_waiters(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::process::exit(0);
    });

    let runs = format!("runs:{{{}}}", args.queue);
    let stall = args.stall;
    let handler = move |job: Job<u64>| {
        let (redis, runs, finish) = (redis.clone(), runs.clone(), Arc::clone(&finish));
        async move {
            if stall {
                let released = finish.notified();
                println!("started {} {}", job.id(), job.attempt());
                released.await;
                return Ok(());
            }
            let _: i64 = redis
                .query(cmd("HINCRBY").arg(&runs).arg(job.id().0).arg(1))
                .await
                .map_err(JobError::retry)?;
            // A little time in hand, so that kills land between a job's effect and its ack.
            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2000))).await;
            Ok(())
        }
    };
    let worker = queue
        .worker(handler)
        .concurrency(args.concurrency)
        .lease(args.lease)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .start()
        .map_err(|e| e.to_string())?;
    println!("ready");
    let mut last = (0, 0);
    loop {
        let stats = worker.stats();
        let now = (stats.completed, stats.rejected);
        if last != now {
            last = now;
            println!("stats completed={} rejected={}", now.0, now.1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
