//! The `troupe` command: parse, configure, run, and turn errors into sentences
//! and exit codes.

use std::process::ExitCode;

use clap::Parser;
use troupe_node::cli::args::{
    AssetsCommand, Cli, Command, ConflictsCommand, JobCommand, QuarantineCommand, TemplateCommand,
    WorkspaceCommand,
};
use troupe_node::cli::commands;
use troupe_node::cli::config::{Config, UpConfig};
use troupe_node::cli::operations;
use troupe_node::cli::report::{EXIT_FAILED, Report};
use troupe_node::daemon::{self, DaemonError};
use troupe_node::local_api::ApiClient;
use troupe_node::ops::Request;
use troupe_node::shutdown::Shutdown;

/// mimalloc instead of the system allocator: a sync decodes, applies and
/// frees millions of small values (paths, strings, op lists), and glibc's
/// malloc and free took about a fifth of the receiver's storage thread.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report}");
            report.exit_code()
        }
    }
}

/// Logs go to stderr; `RUST_LOG` picks the level (default: info for troupe, warn otherwise).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,troupe_node=info,troupe=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> Result<(), Report> {
    let cfg = Config::from_args(&cli.global).map_err(|e| Report::config(&e))?;
    match cli.command {
        Command::Init { name } => init(&cfg, name.as_deref()),
        Command::Up(args) => {
            let up = UpConfig::from_args(&args).map_err(|e| Report::config(&e))?;
            runtime()?
                .block_on(daemon::run(&cfg, up, Shutdown::new()))
                .map_err(|e| daemon_report(&e, &cfg))
        }
        Command::Status => query(&cfg, "status", "/v1/status"),
        Command::Peers => query(&cfg, "peers", "/v1/peers"),
        Command::Stop => stop(&cfg),
        Command::Workspace(w) => {
            let (name, req) = match w {
                WorkspaceCommand::Create {
                    name,
                    kind,
                    from_template: None,
                } => ("workspace create", Request::WorkspaceCreate { name, kind }),
                WorkspaceCommand::Create {
                    name,
                    kind,
                    from_template: Some(file),
                } => (
                    "workspace create",
                    Request::WorkspaceCreateFromTemplate {
                        name,
                        kind: (kind != "show").then_some(kind),
                        file: absolute(file),
                    },
                ),
                WorkspaceCommand::Invite {
                    workspace,
                    peers,
                    force,
                } => (
                    "workspace invite",
                    Request::WorkspaceInvite {
                        workspace,
                        peers,
                        force,
                    },
                ),
                WorkspaceCommand::Join { invite } => {
                    ("workspace join", Request::WorkspaceJoin { invite })
                }
                WorkspaceCommand::List => ("workspace list", Request::WorkspaceList),
                WorkspaceCommand::Leave {
                    workspace,
                    delete_data,
                } => (
                    "workspace leave",
                    Request::WorkspaceLeave {
                        workspace,
                        delete_data,
                    },
                ),
                WorkspaceCommand::Show { workspace } => {
                    ("workspace show", Request::WorkspaceShow { workspace })
                }
                WorkspaceCommand::Archive { workspace } => {
                    ("workspace archive", Request::WorkspaceArchive { workspace })
                }
                WorkspaceCommand::Unarchive { workspace } => (
                    "workspace unarchive",
                    Request::WorkspaceUnarchive { workspace },
                ),
                WorkspaceCommand::Retention { workspace, days } => (
                    "workspace retention",
                    Request::WorkspaceRetention { workspace, days },
                ),
                WorkspaceCommand::Template(TemplateCommand::Export { workspace, file }) => (
                    "workspace template export",
                    Request::WorkspaceTemplateExport {
                        workspace,
                        file: absolute(file),
                    },
                ),
                WorkspaceCommand::Clone {
                    workspace,
                    new_name,
                } => (
                    "workspace clone",
                    Request::WorkspaceClone {
                        workspace,
                        new_name,
                    },
                ),
            };
            store_command(&cfg, name, req)
        }
        Command::Copy {
            from,
            entity,
            to,
            new_id,
        } => store_command(
            &cfg,
            "copy",
            Request::Copy {
                from,
                entity,
                to,
                new_id,
            },
        ),
        Command::Set {
            workspace,
            path,
            value,
        } => store_command(
            &cfg,
            "set",
            Request::Set {
                workspace,
                path,
                value,
            },
        ),
        Command::Get { workspace, path } => {
            store_command(&cfg, "get", Request::Get { workspace, path })
        }
        Command::Show { workspace, entity } => {
            store_command(&cfg, "show", Request::Show { workspace, entity })
        }
        Command::Conflicts(c) => match (c.command, c.workspace) {
            (Some(ConflictsCommand::List { workspace }), _) | (None, Some(workspace)) => {
                store_command(&cfg, "conflicts", Request::Conflicts { workspace })
            }
            (
                Some(ConflictsCommand::Resolve {
                    workspace,
                    entity,
                    fields,
                    picks,
                    take,
                }),
                _,
            ) => {
                if fields.len() != picks.len() {
                    return Err(Report::new(
                        troupe_node::cli::report::EXIT_USAGE,
                        format!(
                            "`troupe conflicts resolve` got {} --field and {} --pick.",
                            fields.len(),
                            picks.len()
                        ),
                        "Nothing was changed.",
                        "Give each --field its own --pick, e.g. --field phone --pick Jordan.",
                    ));
                }
                let picks = fields
                    .into_iter()
                    .zip(picks)
                    .map(|(field, pick)| troupe_node::ops::conflicts::Pick { field, pick })
                    .collect();
                store_command(
                    &cfg,
                    "conflicts resolve",
                    Request::ConflictResolve {
                        workspace,
                        entity,
                        picks,
                        take,
                    },
                )
            }
            (Some(ConflictsCommand::History { workspace }), _) => store_command(
                &cfg,
                "conflicts history",
                Request::ConflictHistory { workspace },
            ),
            (None, None) => Err(Report::new(
                troupe_node::cli::report::EXIT_USAGE,
                "`troupe conflicts` needs a workspace or a subcommand.",
                "Nothing was read or changed.",
                "Run `troupe conflicts list WORKSPACE`, `troupe conflicts resolve WORKSPACE TYPE/ID --take NAME` or `troupe conflicts history WORKSPACE`.",
            )),
        },
        Command::Undo { workspace, bundle } => {
            store_command(&cfg, "undo", Request::Undo { workspace, bundle })
        }
        Command::Redo { workspace, bundle } => {
            store_command(&cfg, "redo", Request::Redo { workspace, bundle })
        }
        Command::Job(JobCommand::Run { workspace, command }) => {
            let answer = operations::job_run(&cfg, workspace, &command)?;
            print_answer(&cfg, "job run", &answer);
            Ok(())
        }
        Command::Import { workspace, file } => {
            let file = std::path::absolute(&file).unwrap_or(file);
            let answer = troupe_node::cli::progress::around("Importing", || {
                commands::run(&cfg, "import", Request::Import { workspace, file })
            })?;
            print_answer(&cfg, "import", &answer);
            Ok(())
        }
        Command::Search { workspace, text } => {
            store_command(&cfg, "search", Request::Search { workspace, text })
        }
        Command::ShowBundle { workspace, bundle } => store_command(
            &cfg,
            "show-bundle",
            Request::ShowBundle { workspace, bundle },
        ),
        Command::Quarantine(q) => {
            let (name, req) = match q {
                QuarantineCommand::List => ("quarantine list", Request::QuarantineList),
                QuarantineCommand::Show { id } => {
                    ("quarantine show", Request::QuarantineShow { id })
                }
                QuarantineCommand::Retry { id } => {
                    ("quarantine retry", Request::QuarantineRetry { id })
                }
                QuarantineCommand::Skip { id } => {
                    ("quarantine skip", Request::QuarantineSkip { id })
                }
            };
            store_command(&cfg, name, req)
        }
        cmd @ (Command::Scrub | Command::Repair) => {
            let (name, req) = if matches!(cmd, Command::Scrub) {
                ("scrub", Request::Scrub)
            } else {
                ("repair", Request::Repair)
            };
            let answer =
                troupe_node::cli::progress::around("Checking every stored change", || {
                    commands::run(&cfg, name, req)
                })?;
            print_answer(&cfg, name, &answer);
            Ok(())
        }
        Command::Gc { workspace, apply } => {
            if let Some(w) = workspace {
                // Validates the name; GC itself covers the whole device.
                commands::run(&cfg, "gc", Request::WorkspaceShow { workspace: w }).map(|_| ())?;
            }
            let answer = troupe_node::cli::progress::around("Looking for files to free", || {
                commands::run(&cfg, "gc", Request::Gc { apply })
            })?;
            print_answer(&cfg, "gc", &answer);
            Ok(())
        }
        Command::Export { workspace, dir } => {
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            let answer = operations::export(&cfg, workspace, &dir)?;
            print_answer(&cfg, "export", &answer);
            Ok(())
        }
        Command::Assets(a) => {
            let (name, req) = match a {
                AssetsCommand::Add { workspace, file } => {
                    let file = std::path::absolute(&file).unwrap_or(file);
                    ("assets add", Request::AssetsAdd { workspace, file })
                }
                AssetsCommand::Delete {
                    workspace,
                    hash,
                    reason,
                } => (
                    "assets delete",
                    Request::AssetsDelete {
                        workspace,
                        hash,
                        reason,
                    },
                ),
                AssetsCommand::List { workspace } => {
                    ("assets list", Request::AssetsList { workspace })
                }
                AssetsCommand::Get {
                    workspace,
                    hash,
                    out,
                } => {
                    let out = std::path::absolute(&out).unwrap_or(out);
                    (
                        "assets get",
                        Request::AssetsGet {
                            workspace,
                            hash,
                            out,
                        },
                    )
                }
            };
            store_command(&cfg, name, req)
        }
        Command::History(h) => store_command(
            &cfg,
            "history",
            Request::History {
                workspace: h.workspace,
                limit: h.limit,
                filter: troupe_node::ops::search::HistoryFilter {
                    entity: h.entity,
                    field: h.field,
                    author: h.author,
                    since: h.since,
                    until: h.until,
                },
            },
        ),
        Command::Demo { keep } => troupe_node::demo::run(keep),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Report> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Report::new(
                EXIT_FAILED,
                format!("The async runtime could not start: {e}."),
                "Nothing was started or changed.",
                "Check the process and thread limits of this machine and try again.",
            )
        })
}

fn stop(cfg: &Config) -> Result<(), Report> {
    runtime()?.block_on(async {
        let client = ApiClient::detect(&cfg.data_dir)
            .await
            .ok_or_else(|| Report::no_daemon("stop", &cfg.data_dir))?;
        client
            .post("/v1/stop", &serde_json::json!({}))
            .await
            .map_err(|e| {
                Report::new(
                    EXIT_FAILED,
                    format!("The running node did not accept `stop`: {e}."),
                    "The node is still running.",
                    "Press Ctrl-C in its terminal, or send it SIGTERM.",
                )
            })?;
        // Wait until it no longer answers.
        for _ in 0..100 {
            if ApiClient::detect(&cfg.data_dir).await.is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok::<_, Report>(())
    })?;
    if !cfg.json {
        println!("The node on {} has stopped.", cfg.data_dir.display());
    }
    Ok(())
}

fn store_command(cfg: &Config, name: &str, req: Request) -> Result<(), Report> {
    let answer = commands::run(cfg, name, req)?;
    print_answer(cfg, name, &answer);
    Ok(())
}

fn print_answer(cfg: &Config, name: &str, answer: &serde_json::Value) {
    if cfg.json {
        println!("{answer}");
    } else {
        commands::print_human(name, answer);
    }
}

fn init(cfg: &Config, name: Option<&str>) -> Result<(), Report> {
    let (id, created) = daemon::init(&cfg.data_dir).map_err(|e| daemon_report(&e, cfg))?;
    if let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) {
        std::fs::write(cfg.data_dir.join(troupe_node::local::NAME_FILE), name).map_err(|e| {
            Report::new(
                EXIT_FAILED,
                format!("Your name could not be saved: {e}."),
                "The device key is set up; the name is not.",
                "Check the data directory's permissions and run `troupe init --name` again.",
            )
        })?;
    }
    if cfg.json {
        println!(
            "{}",
            serde_json::json!({
                "data_dir": cfg.data_dir.display().to_string(),
                "actor_id": id.actor_id().to_string(),
                "peer_id": id.peer_id().to_string(),
                "created": created,
            })
        );
    } else if created {
        println!("Created {} with a new device key.", cfg.data_dir.display());
        println!("Device (actor) id: {}", id.actor_id());
        println!("Network peer id:   {}", id.peer_id());
    } else {
        println!(
            "{} is already set up; its key is unchanged.",
            cfg.data_dir.display()
        );
        println!("Device (actor) id: {}", id.actor_id());
    }
    Ok(())
}

fn query(cfg: &Config, command: &str, path: &str) -> Result<(), Report> {
    let value = runtime()?.block_on(async {
        let client = ApiClient::detect(&cfg.data_dir)
            .await
            .ok_or_else(|| Report::no_daemon(command, &cfg.data_dir))?;
        client.get(path).await.map_err(|e| {
            Report::new(
                EXIT_FAILED,
                format!("The running node did not answer `{command}`: {e}."),
                "Nothing was changed.",
                "Check the node's log; restart it with `troupe up` if it is stuck.",
            )
        })
    })?;
    if cfg.json {
        println!("{value}");
    } else {
        print_human(command, &value);
    }
    Ok(())
}

fn print_human(command: &str, v: &serde_json::Value) {
    match command {
        "peers" => {
            let connected = v["connected"].as_array().cloned().unwrap_or_default();
            println!("{} connected peer(s)", connected.len());
            for p in &connected {
                println!(
                    "  {}  via {}",
                    p["peer_id"].as_str().unwrap_or("?"),
                    p["addr"].as_str().unwrap_or("?")
                );
            }
            let seen = v["discovered"].as_array().cloned().unwrap_or_default();
            if !seen.is_empty() {
                println!("{} seen on the LAN", seen.len());
                for p in &seen {
                    let kind = if p["member"].as_bool() == Some(true) {
                        "member"
                    } else {
                        "other workspace"
                    };
                    println!("  {}  ({kind})", p["peer_id"].as_str().unwrap_or("?"));
                }
            }
            let other = v["other_version"].as_array().cloned().unwrap_or_default();
            if !other.is_empty() {
                println!(
                    "{} on another version of Troupe (nothing syncs with them until both \
                     devices run the same version)",
                    other.len()
                );
                for p in &other {
                    println!(
                        "  {}  via {}",
                        p["peer_id"].as_str().unwrap_or("?"),
                        p["addr"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        _ => {
            println!("Peer id:   {}", v["peer_id"].as_str().unwrap_or("?"));
            println!("Actor id:  {}", v["actor_id"].as_str().unwrap_or("?"));
            println!("Listening: {}", v["listen_addrs"]);
            println!(
                "Version:   {} (sync protocol {})",
                v["version"].as_str().unwrap_or("?"),
                v["sync_protocol"].as_str().unwrap_or("?")
            );
            println!("Connected: {} peer(s)", v["connected_peers"]);
            if v["other_version_peers"].as_u64().is_some_and(|n| n > 0) {
                println!(
                    "Other versions: {} peer(s) run another version of Troupe; nothing syncs \
                     with them until both devices run the same version (`troupe peers` lists them)",
                    v["other_version_peers"]
                );
            }
            println!("mDNS:      {}", v["mdns"]);
            println!(
                "Sync:      {} bundle(s) received from peers since start, {} sent",
                v["sync"]["bundles_committed"], v["sync"]["bundles_sent"]
            );
            if let Some(last) = v["sync"]["store_failure"].as_str() {
                println!(
                    "Store:     a write failed: {last} (the store was opened again {} time(s) since start)",
                    v["sync"]["store_reopened"].as_u64().unwrap_or(0)
                );
            }
        }
    }
}

fn daemon_report(e: &DaemonError, cfg: &Config) -> Report {
    let dir = cfg.data_dir.display();
    match e {
        DaemonError::AlreadyRunning(_) => Report::new(
            EXIT_FAILED,
            format!("Another node is already running on {dir}."),
            "The running node is untouched; nothing new was started.",
            "Use `troupe status` to talk to it, or pass a different --data-dir to run a second node.",
        ),
        DaemonError::Identity(err) => Report::new(
            EXIT_FAILED,
            format!("This device's key could not be used: {err}."),
            "The node did not start; no data was changed.",
            "Restore the key file from a backup, or fix its permissions with `chmod 600`.",
        ),
        other => Report::new(
            EXIT_FAILED,
            format!("The node could not run: {other}."),
            format!("The node on {dir} is not running; its data is unchanged."),
            "Fix the cause above (a busy port, a missing interface) and start it again.",
        ),
    }
}

/// The daemon may run in another directory: file arguments are made absolute.
fn absolute(p: std::path::PathBuf) -> std::path::PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}
