//! `bin` and `python` algorithms: processes of the run user.

use crate::error::RunError;
use crate::process::{ChildSpec, Ending, run_child};
use crate::run::RunContext;
use crate::workspace::{Scratch, make_usable};
use std::ffi::OsString;
use std::path::Path;

/// The algorithm's whole environment: `PATH`, `HOME`, `LANG` and, when an
/// egress proxy is configured, the proxy variables. Nothing is inherited
/// from the runner.
pub(crate) fn child_env(
    ctx: &RunContext,
    home: &Path,
    path_prefix: Option<&Path>,
) -> Vec<(String, String)> {
    let path = match path_prefix {
        Some(prefix) => format!("{}:{}", prefix.display(), ctx.config.path_env),
        None => ctx.config.path_env.clone(),
    };
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("HOME".to_owned(), home.display().to_string()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    env.extend(ctx.config.proxy_env());
    env
}

/// Turns how the algorithm ended into the run's result.
fn algorithm_result(ending: Ending, ctx: &RunContext) -> Result<(), RunError> {
    match ending {
        Ending::Exited(0) => Ok(()),
        Ending::Exited(code) => Err(RunError::Exited {
            code,
            stderr_tail: ctx.out.stderr_tail(),
        }),
        Ending::Signaled(signal) => Err(RunError::Signaled {
            signal,
            name: Ending::signal_name(signal),
            stderr_tail: ctx.out.stderr_tail(),
        }),
    }
}

/// Turns how a preparation step ended into its result.
fn step_result(step: &'static str, ending: Ending, ctx: &RunContext) -> Result<(), RunError> {
    let detail = match ending {
        Ending::Exited(0) => return Ok(()),
        Ending::Exited(code) => format!("exit status {code}"),
        Ending::Signaled(signal) => {
            format!(
                "killed by signal {signal} ({})",
                Ending::signal_name(signal)
            )
        }
    };
    Err(RunError::Step {
        step,
        detail,
        stderr_tail: ctx.out.stderr_tail(),
    })
}

fn os_args(first: &[&Path], rest: &[String]) -> Vec<OsString> {
    first
        .iter()
        .map(|p| p.as_os_str().to_owned())
        .chain(rest.iter().map(OsString::from))
        .collect()
}

/// Runs a `bin` algorithm: the file itself, with the request's arguments.
pub(crate) async fn run_bin(ctx: &RunContext, scratch: &Scratch) -> Result<(), RunError> {
    let algorithm = &ctx.request.algorithm;
    make_usable(algorithm, 0o755, &ctx.user)?;
    let env = child_env(ctx, &scratch.home(), None);
    let spec = ChildSpec {
        program: algorithm,
        args: os_args(&[], &ctx.request.args),
        env: &env,
        cwd: &ctx.request.workdir,
    };
    let ending = run_child(
        spec,
        &ctx.user,
        &ctx.out,
        &ctx.ctl,
        ctx.config.sweep_user_processes,
    )
    .await?;
    algorithm_result(ending, ctx)
}

/// Runs a `python` algorithm: a fresh venv in the scratch directory, `pip
/// install -r` of the requirements when given, then the script with the
/// venv's interpreter. Every step runs as the run user under the run's
/// deadline and Stop.
pub(crate) async fn run_python(ctx: &RunContext, scratch: &Scratch) -> Result<(), RunError> {
    let request = &ctx.request;
    make_usable(&request.algorithm, 0o644, &ctx.user)?;
    if let Some(requirements) = &request.requirements {
        make_usable(requirements, 0o644, &ctx.user)?;
    }
    let sweep = ctx.config.sweep_user_processes;
    let venv = scratch.path().join("venv");
    let venv_bin = venv.join("bin");
    let env = child_env(ctx, &scratch.home(), Some(&venv_bin));

    // Without requirements there is nothing for pip to do: skip installing it.
    let mut venv_args: Vec<OsString> = vec!["-m".into(), "venv".into()];
    if request.requirements.is_none() {
        venv_args.push("--without-pip".into());
    }
    venv_args.push(venv.clone().into_os_string());
    let spec = ChildSpec {
        program: &ctx.config.python3,
        args: venv_args,
        env: &env,
        cwd: &request.workdir,
    };
    let ending = run_child(spec, &ctx.user, &ctx.out, &ctx.ctl, sweep).await?;
    step_result("creating the python venv", ending, ctx)?;

    if let Some(requirements) = &request.requirements {
        let pip = venv_bin.join("pip");
        let args = [
            "install",
            "--no-input",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-r",
        ]
        .into_iter()
        .map(OsString::from)
        .chain([requirements.as_os_str().to_owned()])
        .collect();
        let spec = ChildSpec {
            program: &pip,
            args,
            env: &env,
            cwd: &request.workdir,
        };
        let ending = run_child(spec, &ctx.user, &ctx.out, &ctx.ctl, sweep).await?;
        step_result("pip install -r requirements", ending, ctx)?;
    }

    ctx.out.clear_tail();
    let python = venv_bin.join("python");
    let spec = ChildSpec {
        program: &python,
        args: os_args(&[&request.algorithm], &request.args),
        env: &env,
        cwd: &request.workdir,
    };
    let ending = run_child(spec, &ctx.user, &ctx.out, &ctx.ctl, sweep).await?;
    algorithm_result(ending, ctx)
}
