//! Volumes: the top-level section, every short and long form of a service's `volumes`,
//! `volumes_from`, the project prefix, relative bind sources resolved by the CLI's loader, and
//! bad input refused with the key's path.

use std::collections::BTreeMap;

use super::*;
use crate::compose::{load_project, name_volumes, ComposeFile, ProjectInput};
use crate::limits::TmpfsMount;
use crate::volume::{MountSource, NamedVolume, VolumeMount};

const TOP: &str = "volumes:\n  data: {}\n  shared: {name: team-shared, labels: {tier: db}}\n  nfs: {driver: local, driver_opts: {type: nfs, o: \"addr=10.0.0.2,rw\", device: \":/export\"}}\n  old: {external: true}\n  older: {external: {name: legacy}}\n";

fn with_top(fields: &str) -> String {
    format!("{TOP}services:\n  web: {{image: nginx, {fields}}}\n")
}

fn named(name: &str, prefix: bool) -> NamedVolume {
    NamedVolume {
        name: name.into(),
        driver_opts: BTreeMap::new(),
        labels: BTreeMap::new(),
        external: false,
        nocopy: false,
        subpath: None,
        project_prefix: prefix,
    }
}

fn mount(source: MountSource, target: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        source,
        target: target.into(),
        read_only,
        propagation: None,
    }
}

fn bind(path: &str, create: bool) -> MountSource {
    MountSource::Bind {
        path: path.into(),
        create_host_path: create,
    }
}

#[test]
fn every_short_form_reads() {
    let nfs = NamedVolume {
        driver_opts: BTreeMap::from([
            ("type".into(), "nfs".into()),
            ("o".into(), "addr=10.0.0.2,rw".into()),
            ("device".into(), ":/export".into()),
        ]),
        ..named("nfs", true)
    };
    let shared = NamedVolume {
        labels: BTreeMap::from([("tier".into(), "db".into())]),
        ..named("team-shared", false)
    };
    let external = |name: &str| NamedVolume {
        external: true,
        ..named(name, false)
    };
    let cases: Vec<(&str, VolumeMount)> = vec![
        (
            "data:/var/lib/data",
            mount(
                MountSource::Volume(named("data", true)),
                "/var/lib/data",
                false,
            ),
        ),
        (
            "data:/d/:ro",
            mount(MountSource::Volume(named("data", true)), "/d", true),
        ),
        (
            "data:/d:rw,z",
            mount(MountSource::Volume(named("data", true)), "/d", false),
        ),
        (
            "data:/d:Z",
            mount(MountSource::Volume(named("data", true)), "/d", false),
        ),
        (
            "data:/d:nocopy",
            mount(
                MountSource::Volume(NamedVolume {
                    nocopy: true,
                    ..named("data", true)
                }),
                "/d",
                false,
            ),
        ),
        ("shared:/s", mount(MountSource::Volume(shared), "/s", false)),
        ("nfs:/n", mount(MountSource::Volume(nfs), "/n", false)),
        (
            "old:/o",
            mount(MountSource::Volume(external("old")), "/o", false),
        ),
        (
            "older:/o",
            mount(MountSource::Volume(external("legacy")), "/o", false),
        ),
        (
            "/srv/www:/www:ro",
            mount(bind("/srv/www", true), "/www", true),
        ),
        (
            "/cache",
            mount(MountSource::Anonymous { nocopy: false }, "/cache", false),
        ),
        (
            "/srv:/srv:rslave",
            VolumeMount {
                propagation: Some("rslave".into()),
                ..mount(bind("/srv", true), "/srv", false)
            },
        ),
    ];
    for (text, want) in cases {
        let spec = only_service(&with_top(&format!("volumes: [{text:?}]")));
        assert_eq!(spec.volumes, [want], "{text}");
    }
}

#[test]
fn every_long_form_reads() {
    let cases: Vec<(&str, VolumeMount)> = vec![
        (
            "{type: volume, source: data, target: /d, read_only: true, volume: {nocopy: true, subpath: app/x}}",
            mount(
                MountSource::Volume(NamedVolume {
                    nocopy: true,
                    subpath: Some("app/x".into()),
                    ..named("data", true)
                }),
                "/d",
                true,
            ),
        ),
        ("{type: volume, target: /anon}", mount(MountSource::Anonymous { nocopy: false }, "/anon", false)),
        ("{type: bind, source: /srv, target: /srv}", mount(bind("/srv", false), "/srv", false)),
        (
            "{type: bind, source: /srv, target: /srv, consistency: cached, bind: {create_host_path: true, propagation: shared, selinux: z}}",
            VolumeMount {
                propagation: Some("shared".into()),
                ..mount(bind("/srv", true), "/srv", false)
            },
        ),
    ];
    for (text, want) in cases {
        let spec = only_service(&with_top(&format!("volumes: [{text}]")));
        assert_eq!(spec.volumes, [want], "{text}");
    }
}

#[test]
fn a_tmpfs_volume_is_a_tmpfs_mount() {
    let spec = only_service(&with_top(
        "tmpfs: [/run], volumes: [{type: tmpfs, target: /scratch, tmpfs: {size: 64m, mode: 1777}}, {type: tmpfs, target: /t, read_only: true, tmpfs: {size: 10000}}]",
    ));
    assert!(spec.volumes.is_empty());
    assert_eq!(
        spec.tmpfs,
        [
            TmpfsMount {
                target: "/run".into(),
                options: vec![]
            },
            TmpfsMount {
                target: "/scratch".into(),
                options: vec!["size=67108864".into(), "mode=1777".into()],
            },
            TmpfsMount {
                target: "/t".into(),
                options: vec!["size=10000".into(), "ro".into()],
            },
        ]
    );
}

#[test]
fn the_project_prefixes_volumes_named_by_their_key_only() {
    let mut app = parse_ok(&with_top(
        "volumes: [\"data:/d\", \"shared:/s\", \"old:/o\"]",
    ));
    name_volumes(&mut app, "shop");
    let names: Vec<&str> = app.services[0]
        .1
        .volumes
        .iter()
        .filter_map(|m| m.named().map(|v| v.name.as_str()))
        .collect();
    assert_eq!(names, ["shop_data", "team-shared", "old"]);
    assert!(app.services[0]
        .1
        .volumes
        .iter()
        .all(|m| !m.named().unwrap().project_prefix));
}

#[test]
fn volumes_from_copies_named_and_bind_mounts() {
    let src = format!(
        "{TOP}services:\n  db: {{image: a, container_name: pg, volumes: [\"data:/d\", \"/srv:/srv\"]}}\n  backup: {{image: a, volumes_from: [\"db:ro\"], volumes: [\"/b:/srv\"]}}\n  tool: {{image: a, volumes_from: [\"container:pg\"]}}\n"
    );
    let app = parse_ok(&src);
    let backup = &app.services[1].1;
    // Its own /srv wins; the volume comes read-only.
    assert_eq!(
        backup.volumes,
        [
            mount(bind("/b", true), "/srv", false),
            mount(MountSource::Volume(named("data", true)), "/d", true),
        ]
    );
    let tool = &app.services[2].1;
    assert_eq!(tool.volumes.len(), 2);
    assert!(tool.volumes.iter().all(|m| !m.read_only));
}

/// Relative bind sources are made absolute by the CLI's loader, against the file's
/// directory (and `~` against HOME), in both syntaxes; named volumes are left alone.
#[test]
fn relative_bind_sources_are_resolved_by_the_loader() {
    let source = format!(
        "{TOP}services:\n  web:\n    image: a\n    volumes:\n      - .:/code\n      - ./static/../www:/www:ro\n      - ~/configs:/etc/configs\n      - data:/d\n      - {{type: bind, source: ../up, target: /up}}\n"
    );
    let env = vars(&[("HOME", "/home/ann")]);
    let project = load_project(&ProjectInput {
        files: &[ComposeFile {
            name: "compose.yaml",
            source: &source,
        }],
        env: &env,
        read_file: &|_| Err("none".into()),
        profiles: &[],
        project_dir: Some("/work/shop/"),
    })
    .expect("loads");
    let app = parse_src(&project.source).expect("parses as the server does");
    let sources: Vec<String> = app.services[0]
        .1
        .volumes
        .iter()
        .map(|m| match &m.source {
            MountSource::Bind { path, .. } => path.clone(),
            MountSource::Volume(v) => v.name.clone(),
            MountSource::Anonymous { .. } => "anonymous".into(),
        })
        .collect();
    assert_eq!(
        sources,
        [
            "/work/shop",
            "/work/shop/www",
            "/home/ann/configs",
            "data",
            "/work/up"
        ]
    );
}

#[test]
fn bad_volumes_are_refused_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "volumes: [\"nope:/d\"]",
            "services.web.volumes[0]",
            "service web mounts volume \"nope\", which the file does not define",
        ),
        (
            "volumes: [\"data:d\"]",
            "services.web.volumes[0]",
            "is not an absolute path in the container",
        ),
        (
            "volumes: [\"data:/\"]",
            "services.web.volumes[0]",
            "over the container's root",
        ),
        (
            "volumes: [\"a:b:c:d\"]",
            "services.web.volumes[0]",
            "is not SOURCE:TARGET[:MODE]",
        ),
        (
            "volumes: [\"data:/d:rx\"]",
            "services.web.volumes[0]",
            "\"rx\" is not a volume mode",
        ),
        (
            "volumes: [\"/srv:/d:nocopy\"]",
            "services.web.volumes[0]",
            "nocopy applies to volumes",
        ),
        (
            "volumes: [\"data:/d:shared\"]",
            "services.web.volumes[0]",
            "propagation mode applies to bind mounts only",
        ),
        (
            "volumes: [\"./x:/d\"]",
            "services.web.volumes[0]",
            "is relative",
        ),
        (
            "volumes: [\"data:/d\", \"/s:/d\"]",
            "services.web.volumes[1]",
            "/d is mounted twice",
        ),
        (
            "volumes: [\"data:/d\"], tmpfs: [/d]",
            "services.web.volumes",
            "/d is both a tmpfs and a volume",
        ),
        ("volumes: data", "services.web.volumes", "expected a list"),
        (
            "volumes: [7]",
            "services.web.volumes[0]",
            "expected a string or a mapping",
        ),
        (
            "volumes: [{type: volume, source: data}]",
            "services.web.volumes[0].target",
            "needs `target`",
        ),
        (
            "volumes: [{source: data, target: /d}]",
            "services.web.volumes[0].type",
            "needs `type`",
        ),
        (
            "volumes: [{type: disk, target: /d}]",
            "services.web.volumes[0].type",
            "\"disk\" is not a volume type",
        ),
        (
            "volumes: [{type: npipe, source: x, target: /d}]",
            "services.web.volumes[0].type",
            "volume type npipe is not supported",
        ),
        (
            "volumes: [{type: bind, target: /d}]",
            "services.web.volumes[0].source",
            "needs `source`",
        ),
        (
            "volumes: [{type: tmpfs, source: x, target: /d}]",
            "services.web.volumes[0].source",
            "a tmpfs has no source",
        ),
        (
            "volumes: [{type: tmpfs, target: /d, tmpfs: {size: big}}]",
            "services.web.volumes[0].tmpfs.size",
            "expected a size",
        ),
        (
            "volumes: [{type: tmpfs, target: /d, tmpfs: {mode: 999}}]",
            "services.web.volumes[0].tmpfs.mode",
            "octal mode",
        ),
        (
            "volumes: [{type: bind, source: /s, target: /d, volume: {nocopy: true}}]",
            "services.web.volumes[0].volume",
            "do not apply to a mount of type bind",
        ),
        (
            "volumes: [{type: volume, source: data, target: /d, volume: {subpath: ../x}}]",
            "services.web.volumes[0].volume.subpath",
            "not a relative path inside the volume",
        ),
        (
            "volumes: [{type: volume, target: /d, volume: {subpath: x}}]",
            "services.web.volumes[0].source",
            "subpath needs a named volume",
        ),
        (
            "volumes: [{type: bind, source: /s, target: /d, bind: {propagation: up}}]",
            "services.web.volumes[0].bind.propagation",
            "not a propagation mode",
        ),
        (
            "volumes: [{type: volume, source: data, target: /d, read_only: maybe}]",
            "services.web.volumes[0].read_only",
            "expected a boolean",
        ),
        (
            "volumes: [{type: volume, source: data, target: /d, sorce: x}]",
            "services.web.volumes[0].sorce",
            "unknown key `sorce`",
        ),
        (
            "volumes_from: [nobody]",
            "services.web.volumes_from[0]",
            "\"nobody\" is not a service of this file",
        ),
        (
            "volumes_from: [\"container:ghost\"]",
            "services.web.volumes_from[0]",
            "no service has container_name ghost",
        ),
        (
            "volumes_from: [\"web\"]",
            "services.web.volumes_from[0]",
            "cannot take volumes from itself",
        ),
        (
            "volumes_from: [\"web:rx\"]",
            "services.web.volumes_from[0]",
            "\"rx\" is not ro or rw",
        ),
    ];
    for (fields, path, message) in cases {
        expect_error(&with_top(fields), path, message);
    }
    let top: &[(&str, &str, &str)] = &[
        (
            "volumes: {data: {driver: flocker}}",
            "volumes.data.driver",
            "volume driver \"flocker\" is not supported",
        ),
        (
            "volumes: {data: {driver_opts: {foo: bar}}}",
            "volumes.data.driver_opts.foo",
            "not one the local driver takes",
        ),
        (
            "volumes: {data: {driver_opts: {o: size=1m}}}",
            "volumes.data.driver_opts.type",
            "without `type`",
        ),
        (
            "volumes: {data: {external: true, driver_opts: {type: tmpfs}}}",
            "volumes.data.driver_opts",
            "external volume's driver_opts",
        ),
        (
            "volumes: {data: {external: maybe}}",
            "volumes.data.external",
            "expected a boolean",
        ),
        (
            "volumes: {data: {name: \"a/b\"}}",
            "volumes.data.name",
            "is not a valid volume name",
        ),
        (
            "volumes: {_x: {}}",
            "volumes._x",
            "is not a valid volume name",
        ),
        (
            "volumes: {data: {drvier: local}}",
            "volumes.data.drvier",
            "unknown key `drvier`",
        ),
        ("volumes: [data]", "volumes", "expected a mapping"),
    ];
    for (section, path, message) in top {
        expect_error(
            &format!("{section}\nservices: {{web: {{image: a}}}}\n"),
            path,
            message,
        );
    }
    // A dotted service name is named whole.
    expect_error(
        "services:\n  meet.web: {image: a, volumes: [\"nope:/d\"]}\n",
        "services.\"meet.web\".volumes[0]",
        "service \"meet.web\" mounts volume \"nope\"",
    );
    // An anonymous volume belongs to one replica, so another service cannot share it.
    expect_error(
        "services:\n  db: {image: a, volumes: [/d]}\n  web: {image: a, volumes_from: [db]}\n",
        "services.web.volumes_from[0]",
        "db's volume at /d is anonymous",
    );
}

#[track_caller]
fn expect_error(source: &str, path: &str, message: &str) {
    match parse_src(source) {
        Ok(_) => panic!("{source:?} parsed; expected {path}: {message}"),
        Err(e) => assert!(
            e.errors
                .iter()
                .any(|f| f.path == path && f.message.contains(message) && !f.fix.is_empty()),
            "{source:?}: no error at {path} containing {message:?}, got {:#?}",
            e.errors
        ),
    }
}
