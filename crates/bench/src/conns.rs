//! `keyward-bench connections`: N concurrent module instances on one keywardd (issue 9).
//! N child processes (`keyward-bench conn-child`) each load the module, `C_Initialize`,
//! open a session, log in, sign once with an ECDSA key, report, and stay connected until
//! their stdin closes. All must succeed; keywardd's RSS and threads are read from /proc
//! before and while they are connected.

use crate::env::{proc_stats, Env, Paths, RING, RING_LABEL};
use crate::raw::{rv_name, Mech, Module, Template};
use cryptoki_sys::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The child: one module instance that signs once and stays connected.
pub fn child() -> ExitCode {
    let r = (|| -> Result<(), String> {
        let module = std::env::var_os("BENCH_MODULE").ok_or("BENCH_MODULE not set")?;
        let m = Module::load(&PathBuf::from(module))?;
        let slot = m.slot_by_label(RING_LABEL)?;
        let e = |what: &'static str| move |rv| format!("{what}: {}", rv_name(rv));
        let s = m.open_session(slot).map_err(e("C_OpenSession"))?;
        m.login(s, b"").map_err(e("C_Login"))?;
        let key = m
            .find_one(
                s,
                Template::new()
                    .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
                    .bytes(CKA_LABEL, b"conn-ec"),
            )
            .map_err(e("find conn-ec"))?;
        let mut p = crate::raw::Prepared {
            step: crate::raw::Step::Sign,
            mech: Mech::plain(CKM_ECDSA),
            key,
            input: vec![0x11; 32],
            extra: Vec::new(),
            template: Template::new(),
            out: vec![0; 256],
        };
        m.run(s, &mut p).map_err(e("C_SignInit/C_Sign"))?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ok");
        let _ = out.flush();
        drop(out);
        // Stay connected until the parent closes stdin.
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        m.close_session(s);
        m.finalize();
        Ok(())
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("err {e}");
            ExitCode::from(1)
        }
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it).
fn raise_nofile() -> u64 {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = lim.maximum;
    let new = rustix::process::Rlimit {
        current: hard,
        maximum: hard,
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, new);
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// The parent: `connections [--count N] [--bin-dir DIR] [--repo DIR]`.
pub fn run(args: &[String], mut paths: Paths) -> Result<ExitCode, String> {
    let mut count = 1000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--count" => {
                count = val()?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or("--count: 1 to 10000")?;
            }
            "--bin-dir" => paths.bins = PathBuf::from(val()?),
            "--repo" => paths.repo = PathBuf::from(val()?),
            other => return Err(format!("connections: unknown argument {other:?}")),
        }
    }
    let nofile = raise_nofile();
    // Each child holds two pipes here; keywardd two descriptors per connection.
    let need = u64::try_from(count).unwrap_or(u64::MAX).saturating_mul(2) + 256;
    if nofile < need {
        return Err(format!(
            "RLIMIT_NOFILE is {nofile}, {count} children need about {need}: raise it (ulimit -Hn)"
        ));
    }
    let env = Env::new(&paths, count + 64)?;
    env.ctl(&[
        "key",
        "create",
        "--keyring",
        RING,
        "--purpose",
        "ASYMMETRIC_SIGN",
        "--algorithm",
        "EC_SIGN_P256_SHA256",
        "conn-ec",
    ])?;
    let pid = env.daemon_pid().ok_or("keywardd not running")?;
    // Let keywardd settle (start-up work) before the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let (rss0, threads0) = proc_stats(pid).ok_or("cannot read keywardd's /proc status")?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let started = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(count);
    for i in 0..count {
        let child = Command::new(&exe)
            .arg("conn-child")
            .env("BENCH_MODULE", paths.module())
            .env("KEYWARD_SOCKET", &env.client_socket)
            .env("KEYWARD_CREDENTIALS", &env.credentials)
            .env_remove("KEYWARD_TOKENS")
            .env_remove("KEYWARD_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start child {i}: {e}"))?;
        children.push(child);
    }
    let spawned = started.elapsed();
    let mut failures = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        let mut line = String::new();
        if let Some(out) = c.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ok" {
            failures.push(format!("child {i}: {}", line.trim()));
        }
    }
    let all_up = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let (rss1, threads1) = proc_stats(pid).ok_or("cannot read keywardd's /proc status")?;
    // BENCH_HOLD_SECS: keep everyone connected a while (to look at keywardd from outside).
    if let Some(secs) = std::env::var("BENCH_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        eprintln!(
            "keyward-bench: holding {count} connections to keywardd (pid {pid}) for {secs} s"
        );
        std::thread::sleep(Duration::from_secs(secs));
    }
    // Close every stdin: the children finalize and exit.
    for c in children.iter_mut() {
        drop(c.stdin.take());
    }
    let mut bad_exit = 0usize;
    for c in children.iter_mut() {
        match c.wait() {
            Ok(s) if s.success() => {}
            _ => bad_exit += 1,
        }
    }
    let done = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (rss2, threads2) = proc_stats(pid).unwrap_or((0, 0));
    let per_conn = (rss1.saturating_sub(rss0) as f64) / count as f64;
    println!("| connections | value |");
    println!("|---|---|");
    println!("| module instances (processes) | {count} |");
    println!(
        "| connected and signed | {} |",
        count - failures.len().min(count)
    );
    println!("| exited cleanly | {} |", count - bad_exit.min(count));
    println!(
        "| time to start all / all signed / all exited | {:.1} s / {:.1} s / {:.1} s |",
        spawned.as_secs_f64(),
        all_up.as_secs_f64(),
        done.as_secs_f64()
    );
    println!("| keywardd RSS idle / connected / after | {rss0} KiB / {rss1} KiB / {rss2} KiB |");
    println!(
        "| keywardd threads idle / connected / after | {threads0} / {threads1} / {threads2} |"
    );
    println!("| keywardd RSS per connection | {per_conn:.1} KiB |");
    if !failures.is_empty() || bad_exit > 0 {
        for f in failures.iter().take(10) {
            eprintln!("keyward-bench: {f}");
        }
        eprintln!(
            "keyward-bench: {} of {count} instances failed, {bad_exit} exited badly; keywardd log:\n{}",
            failures.len(),
            env.daemon_log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
