//! OCI layouts, OCI archives and docker-archives: written from a blob
//! store, checked with skopeo, and read back (including archives skopeo
//! wrote) with every blob verified.

mod common;

use common::*;
use kiln_image::archive::{
    ExportImage, read_archive, write_docker_archive, write_oci_archive, write_oci_layout,
};
use kiln_image::layer::{Compression, LayerOptions, write_layer};
use kiln_image::oci::{self, Descriptor, History, ImageConfig, Manifest, json_blob, rfc3339};
use std::fs;
use std::path::Path;
use std::process::Command;

const SKOPEO: &str = "/usr/bin/skopeo";

fn skopeo(args: &[&str]) -> String {
    assert!(
        Path::new(SKOPEO).exists(),
        "skopeo is required for archive tests but {SKOPEO} is missing (apt-get install skopeo)"
    );
    let out = Command::new(SKOPEO)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Builds a two-layer image with the given layer compressions in `store`; returns (manifest digest, config digest, diff_ids).
fn build_image(
    store: &DirStore,
    work: &Path,
    compression: [Compression; 2],
) -> (String, String, Vec<String>) {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, c) in compression.into_iter().enumerate() {
        let dir = work.join(format!("layer{i}"));
        fs::create_dir_all(dir.join("app")).unwrap();
        fs::write(
            dir.join(format!("app/file{i}")),
            format!("content {i}\n").repeat(1000),
        )
        .unwrap();
        let mut blob = Vec::new();
        let d = write_layer(
            &dir,
            &mut blob,
            &LayerOptions {
                compression: c,
                source_date_epoch: Some(0),
                level: None,
                reuse: None,
                xattr_free: None,
            },
        )
        .unwrap();
        assert_eq!(store.put_bytes(&blob), d.digest);
        layers.push(Descriptor::new(&d.media_type, &d.digest, d.size));
        diff_ids.push(d.diff_id);
    }
    let mut config = ImageConfig {
        created: Some(rfc3339(0)),
        ..Default::default()
    };
    config.config.cmd = Some(vec!["/app/file0".into()]);
    config.config.env = Some(vec!["PATH=/usr/bin".into()]);
    config.rootfs.diff_ids = diff_ids.clone();
    for i in 0..2 {
        config.history.push(History {
            created: Some(rfc3339(0)),
            created_by: Some(format!("COPY file{i} /app/ # buildkit")),
            comment: Some("buildkit.dockerfile.v0".into()),
            ..Default::default()
        });
    }
    let (cbytes, cdigest, csize) = json_blob(&config);
    assert_eq!(store.put_bytes(&cbytes), cdigest);
    let manifest = Manifest::new(
        Descriptor::new(oci::MEDIA_TYPE_CONFIG, &cdigest, csize),
        layers,
    );
    let (mbytes, mdigest, _) = json_blob(&manifest);
    assert_eq!(store.put_bytes(&mbytes), mdigest);
    (mdigest, cdigest, diff_ids)
}

fn export(mdigest: &str, name: &str) -> Vec<ExportImage> {
    vec![ExportImage {
        manifest_digest: mdigest.into(),
        ref_name: Some(name.into()),
    }]
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn oci_archive_is_deterministic_and_accepted_by_skopeo() {
    let t = tempfile::tempdir().unwrap();
    let store = DirStore::new(&t.path().join("store"));
    let (mdigest, _, diff_ids) =
        build_image(&store, t.path(), [Compression::Gzip, Compression::Zstd]);
    let file = t.path().join("img.oci.tar");
    write_oci_archive(
        fs::File::create(&file).unwrap(),
        &store,
        &export(&mdigest, "kiln-test:1"),
    )
    .unwrap();
    let again = write_oci_archive(Vec::new(), &store, &export(&mdigest, "kiln-test:1")).unwrap();
    assert_eq!(
        fs::read(&file).unwrap(),
        again,
        "same inputs, same archive bytes"
    );
    let target = format!("oci-archive:{}", file.display());
    let info = json(&skopeo(&["inspect", &target]));
    assert_eq!(info["Digest"], mdigest.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let config = json(&skopeo(&["inspect", "--config", &target]));
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
    // A copy re-reads and verifies every blob.
    let copy = t.path().join("copy");
    skopeo(&["copy", &target, &format!("oci:{}:x", copy.display())]);
    // And we read it back into a fresh store.
    let back = DirStore::new(&t.path().join("back"));
    let loaded = read_archive(&file, &back).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].manifest_digest, mdigest);
    assert_eq!(loaded[0].ref_names, vec!["kiln-test:1".to_string()]);
    assert_eq!(back.count(), 4);
    assert_eq!(back.get(&mdigest), store.get(&mdigest));
}

#[test]
fn docker_archive_is_accepted_by_skopeo_and_is_also_an_oci_layout() {
    let t = tempfile::tempdir().unwrap();
    let store = DirStore::new(&t.path().join("store"));
    let (mdigest, cdigest, diff_ids) =
        build_image(&store, t.path(), [Compression::Gzip, Compression::Gzip]);
    let file = t.path().join("img.docker.tar");
    let images = vec![
        ExportImage {
            manifest_digest: mdigest.clone(),
            ref_name: Some("kiln-test:1".into()),
        },
        ExportImage {
            manifest_digest: mdigest.clone(),
            ref_name: Some("example.com/team/app".into()),
        },
    ];
    write_docker_archive(fs::File::create(&file).unwrap(), &store, &images).unwrap();
    // manifest.json as docker load reads it.
    let mut a = tar::Archive::new(fs::File::open(&file).unwrap());
    let mut manifest_json = None;
    let mut names = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let n = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if n == "manifest.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            manifest_json = Some(s);
        }
        names.push(n);
    }
    let m = json(&manifest_json.unwrap());
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    assert_eq!(m[0]["Config"], format!("blobs/sha256/{}", hex(&cdigest)));
    assert_eq!(
        m[0]["RepoTags"],
        serde_json::json!(["kiln-test:1", "example.com/team/app:latest"])
    );
    assert_eq!(m.as_array().unwrap().len(), 1);
    assert!(names.contains(&"index.json".to_string()) && names.contains(&"oci-layout".to_string()));
    // skopeo's docker-archive reader: config, diff_ids, and a verifying copy.
    let target = format!("docker-archive:{}", file.display());
    let info = json(&skopeo(&["inspect", &target]));
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let config = json(&skopeo(&["inspect", "--config", &target]));
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
    skopeo(&[
        "copy",
        &target,
        &format!("oci:{}:x", t.path().join("from-docker").display()),
    ]);
    // The same file read as an OCI archive.
    let info = json(&skopeo(&[
        "inspect",
        &format!("oci-archive:{}:kiln-test:1", file.display()),
    ]));
    assert_eq!(info["Digest"], mdigest.as_str());
    // Loading prefers index.json: the original manifest, both names.
    let back = DirStore::new(&t.path().join("back"));
    let loaded = read_archive(&file, &back).unwrap();
    let got: Vec<_> = loaded
        .iter()
        .map(|l| (l.manifest_digest.clone(), l.ref_names.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (mdigest.clone(), vec!["kiln-test:1".to_string()]),
            (mdigest.clone(), vec!["example.com/team/app".to_string()])
        ]
    );
    assert_eq!(back.count(), 4);
}

#[test]
fn oci_layout_dir_is_readable_by_skopeo_and_by_read_archive() {
    let t = tempfile::tempdir().unwrap();
    let store = DirStore::new(&t.path().join("store"));
    let (mdigest, _, _) = build_image(&store, t.path(), [Compression::Zstd, Compression::None]);
    let dir = t.path().join("layout");
    write_oci_layout(&dir, &store, &export(&mdigest, "kiln-test:2")).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = json(&fs::read_to_string(dir.join("index.json")).unwrap());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "kiln-test:2"
    );
    let info = json(&skopeo(&[
        "inspect",
        &format!("oci:{}:kiln-test:2", dir.display()),
    ]));
    assert_eq!(info["Digest"], mdigest.as_str());
    let back = DirStore::new(&t.path().join("back"));
    let loaded = read_archive(&dir, &back).unwrap();
    assert_eq!(loaded[0].manifest_digest, mdigest);
    assert_eq!(back.count(), 4);
}

#[test]
fn docker_archive_written_by_skopeo_loads_with_a_synthesized_manifest() {
    let t = tempfile::tempdir().unwrap();
    let store = DirStore::new(&t.path().join("store"));
    let (mdigest, cdigest, diff_ids) =
        build_image(&store, t.path(), [Compression::Gzip, Compression::Gzip]);
    let oci = t.path().join("img.oci.tar");
    write_oci_archive(
        fs::File::create(&oci).unwrap(),
        &store,
        &export(&mdigest, "x:1"),
    )
    .unwrap();
    let docker = t.path().join("skopeo.docker.tar");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", oci.display()),
        &format!("docker-archive:{}:kiln/legacy:3", docker.display()),
    ]);
    let back = DirStore::new(&t.path().join("back"));
    let loaded = read_archive(&docker, &back).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].ref_names,
        vec!["docker.io/kiln/legacy:3".to_string()]
    );
    let manifest = oci::parse_manifest(&back.get(&loaded[0].manifest_digest)).unwrap();
    // skopeo keeps the config bytes, so the config digest is unchanged.
    assert_eq!(manifest.config.digest, cdigest);
    let config = oci::parse_config(&back.get(&manifest.config.digest)).unwrap();
    assert_eq!(config.rootfs.diff_ids, diff_ids);
    // skopeo stores uncompressed layers, so each layer blob is its diff_id.
    let layer_digests: Vec<_> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(layer_digests, diff_ids);
    assert!(
        manifest
            .layers
            .iter()
            .all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar")
    );
    // The synthesized image is itself exportable and valid.
    let out = t.path().join("again.oci.tar");
    write_oci_archive(
        fs::File::create(&out).unwrap(),
        &back,
        &export(&loaded[0].manifest_digest, "y:1"),
    )
    .unwrap();
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", out.display()),
        &format!("oci:{}:y", t.path().join("y").display()),
    ]);
}

#[test]
fn tampered_blob_in_a_layout_is_refused_on_load() {
    let t = tempfile::tempdir().unwrap();
    let store = DirStore::new(&t.path().join("store"));
    let (mdigest, _, _) = build_image(&store, t.path(), [Compression::Gzip, Compression::Gzip]);
    let dir = t.path().join("layout");
    write_oci_layout(&dir, &store, &export(&mdigest, "x:1")).unwrap();
    let manifest = oci::parse_manifest(&store.get(&mdigest)).unwrap();
    let layer = &manifest.layers[1].digest;
    let path = dir
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let back = DirStore::new(&t.path().join("back"));
    let err = read_archive(&dir, &back).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("storing blob {layer}: digest mismatch")),
        "{err}"
    );
}

#[test]
fn exporting_a_blob_whose_content_changed_fails_with_both_digests() {
    let t = tempfile::tempdir().unwrap();
    let store = DirStore::new(&t.path().join("store"));
    let (mdigest, cdigest, _) =
        build_image(&store, t.path(), [Compression::Gzip, Compression::Gzip]);
    fs::write(
        store.0.join(cdigest.trim_start_matches("sha256:")),
        b"{\"os\":\"linux\"}",
    )
    .unwrap();
    let err = write_oci_archive(Vec::new(), &store, &export(&mdigest, "x:1"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("blob {cdigest} has digest sha256:")),
        "{err}"
    );
}

#[test]
fn not_an_archive_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("empty.tar");
    fs::write(&f, vec![0u8; 1024]).unwrap();
    let back = DirStore::new(&t.path().join("back"));
    let err = read_archive(&f, &back).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: neither index.json nor manifest.json found: not an OCI layout or docker-archive",
            f.display()
        )
    );
}

#[test]
fn gzip_compressed_archives_load_too() {
    let t = tempfile::tempdir().unwrap();
    let store = DirStore::new(&t.path().join("store"));
    let (mdigest, _, _) = build_image(&store, t.path(), [Compression::Gzip, Compression::None]);
    let tar_bytes = write_docker_archive(Vec::new(), &store, &export(&mdigest, "z:1")).unwrap();
    let file = t.path().join("img.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&file).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    gz.finish().unwrap();
    let back = DirStore::new(&t.path().join("back"));
    let loaded = read_archive(&file, &back).unwrap();
    assert_eq!(loaded[0].manifest_digest, mdigest);
    assert_eq!(loaded[0].ref_names, vec!["z:1".to_string()]);
    assert_eq!(back.count(), 4);
}
