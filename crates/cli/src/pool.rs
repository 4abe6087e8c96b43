//! `smoothfs pool create|destroy|list`: managed pools as systemd mount units (S21.4).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use smoothfs_uapi::managed::{self, CreatePool, Systemd};

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Write and start a mount unit for a new pool.
    Create {
        #[arg(long)]
        name: String,
        /// Tier directories, fastest first, separated by ':'.
        #[arg(long)]
        tiers: String,
        #[arg(long)]
        uuid: Option<String>,
        #[arg(long)]
        mount_base: Option<PathBuf>,
    },
    /// Stop a pool and remove its unit (tier data is kept).
    Destroy {
        #[arg(long)]
        name: String,
        #[arg(long)]
        mount_base: Option<PathBuf>,
    },
    /// List managed pools.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: PoolCmd) -> ExitCode {
    let sys = Systemd::host();
    let res: Result<(), String> = match cmd {
        PoolCmd::Create {
            name,
            tiers,
            uuid,
            mount_base,
        } => (|| {
            let uuid = match uuid {
                Some(u) => Some(
                    uuid::Uuid::parse_str(&u).map_err(|e| format!("invalid --uuid {u}: {e}"))?,
                ),
                None => None,
            };
            let tiers: Vec<PathBuf> = tiers
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
            let req = CreatePool {
                name,
                uuid,
                tiers,
                mount_base,
            };
            let unit = managed::create_pool(&sys, &req).map_err(|e| e.to_string())?;
            println!(
                "created pool {} ({}) at {} [{}]",
                unit.name,
                unit.uuid.hyphenated(),
                unit.mountpoint.display(),
                unit.unit_name
            );
            Ok(())
        })(),
        PoolCmd::Destroy { name, mount_base } => {
            managed::destroy_pool(&sys, &name, mount_base.as_deref())
                .map_err(|e| e.to_string())
                .map(|()| println!("destroyed pool {name}"))
        }
        PoolCmd::List { json } => (|| {
            let pools = managed::list_pools(&sys.unit_dir).map_err(|e| e.to_string())?;
            if json {
                let v: Vec<serde_json::Value> = pools
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name,
                            "uuid": p.uuid.hyphenated().to_string(),
                            "mountpoint": p.mountpoint,
                            "tiers": p.tiers,
                            "unit": p.unit_name,
                            "state": managed::unit_state(sys.runner, &p.unit_name),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!(
                    "{:<16} {:<36} {:<28} {:<10} TIERS",
                    "NAME", "UUID", "MOUNTPOINT", "STATE"
                );
                for p in &pools {
                    let tiers: Vec<String> =
                        p.tiers.iter().map(|t| t.display().to_string()).collect();
                    println!(
                        "{:<16} {:<36} {:<28} {:<10} {}",
                        p.name,
                        p.uuid.hyphenated(),
                        p.mountpoint.display(),
                        managed::unit_state(sys.runner, &p.unit_name),
                        tiers.join(":")
                    );
                }
            }
            Ok(())
        })(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoothfs: {e}");
            ExitCode::from(1)
        }
    }
}
