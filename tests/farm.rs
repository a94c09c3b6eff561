//! RUN steps executed on kiln workers through a REAPI scheduler (`kiln build --remote`,
//! `kiln worker`), against a real BuildGrid with its PostgreSQL, as root and as the
//! unprivileged test user: two workers run a 4-stage build's independent stages and the
//! image equals the local one; a farm that is down, and a step that fails there, cost a
//! warning and run here.

mod common;

use common::buildgrid::BuildGrid;
use common::identity::{Identity, World, assert_ok, assert_refused, both, identities, image_id};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};

fn four_stages(tag: &str) -> String {
    let mut df = common::identity::BUSYBOX.replace("FROM scratch", "FROM scratch AS base");
    for s in ["a", "b", "c", "d"] {
        df.push_str(&format!(
            "\nFROM base AS {s}\nRUN echo {s} {tag} > /{s}; sleep 1\n"
        ));
    }
    df.push_str("\nFROM base\n");
    for s in ["a", "b", "c", "d"] {
        df.push_str(&format!("COPY --from={s} /{s} /{s}\n"));
    }
    df.push_str("RUN cat /a /b /c /d > /all\n");
    // A RUN with a mount needs this machine: it runs here.
    df.push_str("RUN --mount=type=tmpfs,target=/t echo here > /t/x && cp /t/x /here\n");
    df
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// A `kiln worker` serving `farm` from a store of its own, as `id`.
struct Worker {
    world: World,
    child: Child,
}

impl Worker {
    fn start(id: Identity, farm: &BuildGrid, name: &str) -> Worker {
        let world = World::new(id);
        let log = std::fs::File::create(world.tmp.path().join("worker.log")).unwrap();
        let child = world
            .kiln_command(
                &["worker", "--endpoint", &farm.endpoint(), "--bot-id", name],
                &[],
            )
            // Its own process group: as the test user it runs under runuser, which does
            // not pass a SIGKILL on, so the group is killed.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Worker { world, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.world.tmp.path().join("worker.log")).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

fn local_image(id: Identity, df: &str) -> String {
    let world = World::new(id);
    let ctx = world.context("local", df);
    let out = world.build(&ctx, &["--no-cache"]);
    assert_ok(&out);
    image_id(&out)
}

#[test]
fn two_workers_run_a_four_stage_build_and_the_image_is_the_local_one() {
    let farm = BuildGrid::start_farm();
    for id in identities() {
        let w1 = Worker::start(id, &farm, &format!("w1-{id:?}"));
        let w2 = Worker::start(id, &farm, &format!("w2-{id:?}"));
        let df = four_stages(&format!("{id:?}"));
        let world = World::new(id);
        let ctx = world.context("ctx", &df);
        let remote = format!("--remote={}", farm.endpoint());
        let out = world.build(&ctx, &["-t", "four:1", &remote]);
        assert_ok(&out);
        let t = text(&out);
        // The busybox install, the four stages and the RUN after them: six RUN steps; the
        // RUN with a mount ran here.
        let ran: Vec<&str> = t
            .lines()
            .filter(|l| l.contains("ran on the farm"))
            .collect();
        assert_eq!(ran.len(), 6, "{}\n{}\n{}", t, w1.log(), w2.log());
        for w in [&w1, &w2] {
            assert!(
                w.log().contains("done (ok)"),
                "a worker ran nothing:\n{}\n{}",
                w.log(),
                t
            );
        }
        assert!(!t.contains("warning"), "{t}");
        assert_eq!(image_id(&out), local_image(id, &df), "{t}");
        // Recorded here: the next build is all cached, with no farm.
        let again = world.build(&ctx, &["-t", "four:1"]);
        assert_ok(&again);
        assert!(!text(&again).contains("ran on the farm"));
        assert_eq!(image_id(&again), image_id(&out));

        // A step that fails on the farm runs here, and fails as it would have here.
        let failing = format!(
            "{}RUN echo doomed {id:?}; exit 3\n",
            common::identity::BUSYBOX
        );
        let ctx = world.context("failing", &failing);
        let out = world.build(&ctx, &[&remote]);
        assert_refused(&out);
        let t = text(&out);
        assert!(t.contains("failed on the farm"), "{t}");
        assert!(
            t.contains("exit code: 3") || t.contains("exit code 3"),
            "{t}"
        );
    }
}

#[test]
fn a_farm_that_is_down_costs_one_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for id in identities() {
        let df = four_stages(&format!("down {id:?}"));
        let world = World::new(id);
        let ctx = world.context("ctx", &df);
        let out = world.build(&ctx, &[&format!("--remote=grpc://127.0.0.1:{port}")]);
        assert_ok(&out);
        let t = text(&out);
        let warnings: Vec<&str> = t.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(warnings.len(), 1, "{}", both(&out));
        assert!(
            warnings[0].contains("running every step here"),
            "{warnings:?}"
        );
        assert_eq!(image_id(&out), local_image(id, &df));
    }
}
