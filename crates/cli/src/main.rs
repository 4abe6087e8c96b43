//! `smoothfs`: the mount helper, the data-plane daemon and the operator CLI.
//!
//! Invoked as `mount.fuse.smoothfs` (argv[0]) it behaves as the mount
//! helper of S1.4: `mount.fuse.smoothfs SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v]`.

mod admin;
mod cpcmd;
mod evacuate;
mod logcmd;
mod luncmd;
mod movecmd;
mod ops;
mod pinrule;
mod pool;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use smoothfs_fs::mount;
use smoothfs_fs::options::MountOptions;

/// Exit status of a failed mount (S0).
const EXIT_MOUNT_FAILED: u8 = 32;
/// Environment variable carrying the readiness pipe to a daemonised child.
const READY_FD_ENV: &str = "SMOOTHFS_READY_FD";

#[derive(Parser)]
#[command(
    name = "smoothfs",
    version,
    about = "Tiering storage engine: one mount over fast and slow disks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount a pool (data plane). Daemonises unless -f.
    Mount(MountArgs),
    /// Managed pools: systemd mount units (S21).
    #[command(subcommand)]
    Pool(pool::PoolCmd),
    /// Status items and tiers of a mounted pool (S1.7).
    Status(ops::StatusArgs),
    /// Inspect the object behind a path or object id (S20.4.1).
    Inspect(ops::InspectArgs),
    /// Print a pool's events as JSON lines (S26.5).
    Events(ops::EventsArgs),
    /// Move a file to another tier now (operator move, S10.2, S26.6).
    Move(movecmd::MoveArgs),
    /// Move a file one tier faster (S26.6).
    Promote(logcmd::RankArgs),
    /// Move a file one tier slower (S26.6).
    Demote(logcmd::RankArgs),
    /// The movement log, newest first (S26.3).
    Log(logcmd::LogArgs),
    /// Pin a file hot or cold, or read its pins (S8.6).
    #[command(subcommand)]
    Pin(admin::PinCmd),
    /// Active LUNs: pin, unpin, move with the target stopped (S18).
    #[command(subcommand)]
    Lun(luncmd::LunCmd),
    /// Stop planning and cutting over moves; waits for running cutovers (S15.1).
    Quiesce(admin::QuiesceArgs),
    /// Resume moves after quiesce; optionally prune empty directories (S15.2).
    Reconcile(admin::ReconcileArgs),
    /// Tiers: list, down, resume, evacuate (S23, S24).
    #[command(subcommand)]
    Tier(admin::TierCmd),
    /// Read or set a pool's tunables (STATUS / SET_TUNABLE).
    #[command(subcommand)]
    Tunable(admin::TunableCmd),
    /// Start, stop or watch the background scrub (S4.6).
    #[command(subcommand)]
    Scrub(admin::ScrubCmd),
    /// The per-host control plane daemon, in the foreground (S22, S26.6).
    Controlplane(cpcmd::ControlplaneArgs),
    /// Mount a pool and run its control plane in one command (S26.6).
    Up(cpcmd::UpArgs),
    /// What the planner would do, per object, and why (S22.6).
    Plan(cpcmd::PlanArgs),
}

#[derive(clap::Args)]
struct MountArgs {
    /// Mount options: pool=NAME,uuid=UUID,tiers=/t0:/t1[,...]
    #[arg(short = 'o')]
    options: Option<String>,
    /// Stay in the foreground, logging to stderr.
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
    /// Verbose logging.
    #[arg(short = 'v')]
    verbose: bool,
    /// Source string shown as the fsname (e.g. `none` or `smoothfs:tank`).
    source: String,
    mountpoint: PathBuf,
}

fn init_logging(verbose: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SMOOTHFS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if verbose { "debug" } else { "info" })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    if argv0
        .rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("mount.fuse.smoothfs") || n == "mount.smoothfs")
    {
        return mount_helper(std::env::args().skip(1).collect());
    }
    if let Some(code) = cpcmd::intercept_move_control() {
        return code;
    }
    // Usage errors exit 1 (S26.6/2); clap's own default would be 2.
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.cmd {
        Cmd::Mount(a) => do_mount(a, false),
        Cmd::Pool(p) => pool::run(p),
        Cmd::Status(a) => ops::status(a),
        Cmd::Inspect(a) => ops::inspect(a),
        Cmd::Events(a) => ops::events(a),
        Cmd::Move(a) => movecmd::run(a),
        Cmd::Promote(a) => logcmd::promote(a),
        Cmd::Demote(a) => logcmd::demote(a),
        Cmd::Log(a) => logcmd::log(a),
        Cmd::Pin(c) => admin::pin(c),
        Cmd::Lun(c) => luncmd::run(c),
        Cmd::Quiesce(a) => admin::quiesce(a),
        Cmd::Reconcile(a) => admin::reconcile(a),
        Cmd::Tier(c) => admin::tier(c),
        Cmd::Tunable(c) => admin::tunable(c),
        Cmd::Scrub(c) => admin::scrub(c),
        Cmd::Controlplane(a) => cpcmd::controlplane(a),
        Cmd::Up(a) => cpcmd::up(a),
        Cmd::Plan(a) => cpcmd::plan(a),
    }
}

/// `mount.fuse.smoothfs SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v]`:
/// `-f` here means "fake" (validate, exit 0), as with mount(8) helpers.
fn mount_helper(args: Vec<String>) -> ExitCode {
    let mut pos = Vec::new();
    let mut opts = None;
    let mut fake = false;
    let mut verbose = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts = it.next(),
            "-n" | "-s" => {}
            "-f" => fake = true,
            "-v" => verbose = true,
            s if s.starts_with("-o") => opts = Some(s[2..].to_string()),
            s if s.starts_with('-') => {
                eprintln!("smoothfs: unknown flag {s}");
                return ExitCode::from(1);
            }
            _ => pos.push(a),
        }
    }
    if pos.len() != 2 {
        eprintln!("usage: mount.fuse.smoothfs SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v]");
        return ExitCode::from(1);
    }
    let a = MountArgs {
        options: opts,
        foreground: false,
        verbose,
        source: pos[0].clone(),
        mountpoint: PathBuf::from(&pos[1]),
    };
    do_mount(a, fake)
}

fn fail(e: &smoothfs_fs::Error) -> ExitCode {
    eprintln!("{}", mount::failure_line(e));
    ExitCode::from(EXIT_MOUNT_FAILED)
}

fn do_mount(a: MountArgs, validate_only: bool) -> ExitCode {
    init_logging(a.verbose);
    let opts_str = a.options.clone().unwrap_or_default();
    let opts = match MountOptions::parse(&a.source, &a.mountpoint, &opts_str) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    if validate_only {
        return ExitCode::SUCCESS;
    }
    // A daemonised child reports readiness (or its failure) through this pipe.
    let ready_fd: Option<OwnedFd> = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        // SAFETY: the parent created this pipe end for us and passed its number.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    if !a.foreground && ready_fd.is_none() {
        return daemonise(&a, &opts_str);
    }
    let ready_file = ready_fd.map(std::fs::File::from);
    let ready_file = std::sync::Mutex::new(ready_file);
    let signal_ready = || {
        if let Ok(mut g) = ready_file.lock()
            && let Some(mut f) = g.take()
        {
            let _ = f.write_all(b"OK\n");
        }
    };
    match mount::run(opts, signal_ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Ok(mut g) = ready_file.lock()
                && let Some(mut f) = g.take()
            {
                let _ = f.write_all(format!("ERR {}\n", mount::failure_line(&e)).as_bytes());
            }
            fail(&e)
        }
    }
}

/// Start the daemon in the background and wait until the mount is live.
fn daemonise(a: &MountArgs, opts: &str) -> ExitCode {
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("smoothfs: mount failed: EIO: cannot create pipe: {e}");
            return ExitCode::from(EXIT_MOUNT_FAILED);
        }
    };
    let wfd = writer.as_raw_fd();
    // Let the child inherit the write end.
    unsafe {
        let fl = libc::fcntl(wfd, libc::F_GETFD);
        libc::fcntl(wfd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("smoothfs: mount failed: EIO: cannot find own executable: {e}");
            return ExitCode::from(EXIT_MOUNT_FAILED);
        }
    };
    let log_path = PathBuf::from("/run/smoothfs").join(format!(
        "{}.log",
        a.mountpoint.to_string_lossy().replace('/', "_")
    ));
    let _ = std::fs::create_dir_all("/run/smoothfs");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path);
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("mount").arg("-f").arg("-o").arg(opts);
    if a.verbose {
        cmd.arg("-v");
    }
    cmd.arg(&a.source)
        .arg(&a.mountpoint)
        .env(READY_FD_ENV, wfd.to_string())
        .stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::null());
    match log {
        Ok(f) => cmd.stderr(f),
        Err(_) => cmd.stderr(std::process::Stdio::null()),
    };
    // New session: the daemon outlives the helper and its terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(writer);
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smoothfs: mount failed: EIO: cannot start daemon: {e}");
            return ExitCode::from(EXIT_MOUNT_FAILED);
        }
    };
    let mut msg = String::new();
    let _ = reader.read_to_string(&mut msg);
    if msg.starts_with("OK") {
        return ExitCode::SUCCESS;
    }
    let _ = child.wait();
    match msg.strip_prefix("ERR ") {
        Some(line) => eprintln!("{}", line.trim_end()),
        None => eprintln!(
            "smoothfs: mount failed: EIO: daemon exited before the mount was ready (log: {})",
            log_path.display()
        ),
    }
    ExitCode::from(EXIT_MOUNT_FAILED)
}
