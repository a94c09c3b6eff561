//! Git servers on loopback for the git source tests: `git daemon` (git://) and
//! `git http-backend` behind a small HTTP/1.0 server of the test's own (std `TcpListener`,
//! one CGI run per request), both serving the repositories under one directory, which the
//! test makes and commits to with [`Repo`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Both servers, stopped when dropped.
pub struct GitServers {
    pub base: tempfile::TempDir,
    /// The HTTP server's requests: `GET /r.git/info/refs`, `POST /r.git/git-upload-pack
    /// fetch` (the protocol v2 command in the body: `ls-refs` or `fetch`).
    pub http_log: Arc<Mutex<Vec<String>>>,
    daemon: Child,
    pub git_port: u16,
    pub http_port: u16,
}

impl GitServers {
    pub fn start() -> GitServers {
        let base = tempfile::tempdir().expect("temp dir");
        open_dir(base.path());
        let git_port = free_port();
        // `git-daemon` itself, not `git daemon`: the `git` wrapper would be the child, and
        // killing it would leave the daemon running after the test.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git (apt-get install git)");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let daemon = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={git_port}"))
            .arg(format!("--base-path={}", base.path().display()))
            .arg(base.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (apt-get install git)");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let http_port = listener.local_addr().expect("addr").port();
        let root = base.path().to_path_buf();
        let http_log = Arc::new(Mutex::new(Vec::new()));
        let log = http_log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let root = root.clone();
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve_cgi(conn, &root, &log);
                });
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", git_port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitServers {
            base,
            http_log,
            daemon,
            git_port,
            http_port,
        }
    }

    /// A new repository `name` (`name.git` on the servers), branch `main`.
    pub fn repo(&self, name: &str) -> Repo {
        let dir = self.base.path().join(format!("{name}.git"));
        std::fs::create_dir(&dir).expect("mkdir repo");
        git(&dir, &["init", "-q", "-b", "main"]);
        Repo { dir }
    }

    pub fn http_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.http_port)
    }

    /// How many protocol v2 `fetch` commands the HTTP server answered since the last call.
    pub fn take_http_fetches(&self) -> usize {
        let mut log = self.http_log.lock().expect("log");
        let n = log.iter().filter(|l| l.ends_with(" fetch")).count();
        log.clear();
        n
    }

    pub fn git_url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.git_port)
    }
}

impl Drop for GitServers {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A repository the test writes and commits to.
pub struct Repo {
    pub dir: PathBuf,
}

impl Repo {
    /// Writes `files` (path, content, mode) and commits them; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str, u32)], message: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        for (path, content, mode) in files {
            let p = self.dir.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        self.commit_all(message)
    }

    /// Adds a symlink `path` → `target` and commits it.
    pub fn symlink(&self, path: &str, target: &str) -> String {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, &p).expect("symlink");
        self.commit_all(&format!("link {path}"))
    }

    fn commit_all(&self, message: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        self.commit_index(message)
    }

    /// Commits the index as it is (a gitlink added with `update-index` has no directory
    /// that `add -A` would keep).
    pub fn commit_index(&self, message: &str) -> String {
        git(
            &self.dir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "commit",
                "-q",
                "-m",
                message,
            ],
        );
        open_dir(&self.dir);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    /// An annotated tag at HEAD.
    pub fn tag(&self, name: &str) {
        git(
            &self.dir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "tag",
                "-a",
                name,
                "-m",
                name,
            ],
        );
    }
}

/// Runs git in `dir`; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Readable by the rootless test user too (the servers run as the test).
fn open_dir(dir: &Path) {
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One HTTP request, answered by `git http-backend` as a CGI program.
fn serve_cgi(conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = match header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        Some(len) => {
            let mut b = vec![0; len];
            reader.read_exact(&mut b)?;
            b
        }
        None if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) => {
            read_chunked(&mut reader)?
        }
        None => Vec::new(),
    };
    let command = ["ls-refs", "fetch"]
        .into_iter()
        .find(|c| {
            let needle = format!("command={c}");
            body.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .unwrap_or("");
    if let Ok(mut log) = log.lock() {
        log.push(format!("{method} {path} {command}").trim_end().to_string());
    }
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = header("content-type") {
        cmd.env("CONTENT_TYPE", t);
    }
    if let Some(e) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(p) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut out)?;
    let _ = writer.join();
    child.wait()?;
    // CGI: headers, a blank line, the body; "Status:" sets the status line.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, rest) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&out[..i]).into_owned(),
            &out[i + n..],
        ),
        None => (String::new(), &out[..]),
    };
    let mut status = "200 OK".to_string();
    let mut response = Vec::new();
    let mut kept = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            _ => {
                kept.push_str(h);
                kept.push_str("\r\n");
            }
        }
    }
    response.extend_from_slice(format!("HTTP/1.0 {status}\r\n").as_bytes());
    response.extend_from_slice(kept.as_bytes());
    response.extend_from_slice(format!("Content-Length: {}\r\n", rest.len()).as_bytes());
    response.extend_from_slice(b"Connection: close\r\n\r\n");
    response.extend_from_slice(rest);
    let mut conn = conn;
    conn.write_all(&response)?;
    conn.flush()
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            let mut end = String::new();
            reader.read_line(&mut end)?;
            return Ok(body);
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        chunk.truncate(size);
        body.extend_from_slice(&chunk);
    }
}
