//! `braid torture`: one seed (with its scenario, failures and optional shrinking) or a sweep
//! with its summary.

use std::process::ExitCode;

use braid_torture::run::Options;
use braid_torture::scenario::{Scenario, Shares};
use braid_torture::sweep;

use crate::cli::TortureArgs;

pub fn run(request: TortureArgs) -> ExitCode {
    for (flag, share) in [
        ("--tansu-share", request.tansu_share),
        ("--moto-share", request.moto_share),
        ("--registry-share", request.registry_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            eprintln!("error: {flag} {share} is outside 0..=1");
            return ExitCode::from(2);
        }
    }
    let shares = Shares {
        tansu: request.tansu_share,
        moto: request.moto_share,
        registry: request.registry_share,
    };
    let braid = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("error: cannot find the braid binary to start: {error}");
            return ExitCode::FAILURE;
        }
    };
    // A fresh temp dir unless one is named; kept when a scenario fails (its logs are there).
    let temp = match &request.dir {
        Some(_) => None,
        None => match tempfile::Builder::new().prefix("braid-torture-").tempdir() {
            Ok(dir) => Some(dir),
            Err(error) => {
                eprintln!("error: creating a temp dir: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let dir = request
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_owned()))
        .unwrap_or_default();
    let options = Options {
        braid,
        dir,
        keep: request.keep,
        shares,
    };
    let progress = |line: &str| eprintln!("{line}");
    let passed = match request.seed {
        Some(seed) => {
            let scenario = Scenario::draw(seed, &shares);
            eprintln!("{scenario}");
            match braid_torture::run::run(&scenario, &options) {
                Ok(outcome) => {
                    eprintln!("{}", sweep::verdict(&scenario, &outcome));
                    if request.shrink && !outcome.failures.is_empty() {
                        let keep = sweep::shrink(&scenario, &options, &progress);
                        eprintln!("the faults that matter:\n{}", scenario.with_faults(&keep));
                    }
                    outcome.failures.is_empty()
                }
                Err(error) => {
                    eprintln!("seed {seed}: harness error: {error}");
                    false
                }
            }
        }
        None => {
            let seeds: Vec<u64> = if request.seeds.is_empty() {
                (request.first..request.first.saturating_add(request.scenarios)).collect()
            } else {
                request.seeds.clone()
            };
            let summary = sweep::sweep(&seeds, request.jobs, &options, &progress);
            println!("{}", summary.render());
            if let Some(path) = &request.summary
                && let Err(error) = sweep::write_summary(&summary, path)
            {
                eprintln!("error: writing {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
            summary.failed.is_empty() && summary.harness_errors.is_empty()
        }
    };
    // A failing scenario's folder stays for its logs.
    if !passed && let Some(temp) = temp {
        let kept = temp.keep();
        eprintln!("scenario folders kept in {}", kept.display());
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
