//! The build checks that need the lowering: each rule triggers on what BuildKit warns
//! of and stays quiet otherwise (messages in BuildKit's words).

use kiln_parser::lint::dispatch::IgnoreCheck;
use kiln_parser::lint::{CheckConfig, check_file, select};
use kiln_parser::{CheckOptions, EmptyResolver, LowerOptions, lower_checked, parse};

fn check_with(src: &str, opts: LowerOptions, check: CheckOptions<'_>) -> Vec<String> {
    let df = parse(src).unwrap();
    let mut all = check_file(&df);
    let (_, found) = lower_checked(&df, &opts, &EmptyResolver, check).unwrap();
    all.extend(found);
    select(all, &CheckConfig::default())
        .iter()
        .map(|f| f.to_string())
        .collect()
}

fn check(src: &str) -> Vec<String> {
    check_with(src, LowerOptions::default(), CheckOptions::default())
}

#[test]
fn undefined_var() {
    assert_eq!(
        check("FROM scratch\nCOPY $SRC /x\n"),
        ["UndefinedVar: Usage of undefined variable '$SRC' (line 2)"]
    );
    assert_eq!(
        check("FROM scratch\nENV PATH=$PAHT:/x\n"),
        ["UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?) (line 2)"]
    );
    // Declared ARGs (even without a value), ENV, and RUN (the shell expands it) are fine.
    assert!(check("FROM scratch\nARG SRC\nCOPY $SRC /x\n").is_empty());
    assert!(check("FROM scratch\nENV A=1\nCOPY $A /x\n").is_empty());
    assert!(check("FROM scratch\nRUN echo $NOPE\n").is_empty());
    // A global ARG must be redeclared in the stage.
    assert_eq!(
        check("ARG V=1\nFROM scratch\nWORKDIR /$V\n"),
        ["UndefinedVar: Usage of undefined variable '$V' (line 3)"]
    );
}

#[test]
fn json_args_recommended() {
    assert_eq!(
        check("FROM scratch\nCMD echo hi\n"),
        [
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"
        ]
    );
    assert!(check("FROM scratch\nCMD [\"echo\", \"hi\"]\n").is_empty());
    assert!(check("FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT echo hi\n").is_empty());
}

#[test]
fn workdir_relative_path() {
    assert_eq!(
        check("FROM scratch\nWORKDIR app\n"),
        [
            "WorkdirRelativePath: Relative workdir \"app\" can have unexpected results if the base image changes (line 2)"
        ]
    );
    assert!(check("FROM scratch\nWORKDIR /app\nWORKDIR sub\n").is_empty());
    // A WORKDIR in the stage this one is built from counts.
    assert!(check("FROM scratch AS a\nWORKDIR /app\nFROM a\nWORKDIR sub\n").is_empty());
}

#[test]
fn multiple_instructions_disallowed() {
    assert_eq!(
        check("FROM scratch\nCMD [\"a\"]\nCMD [\"b\"]\n"),
        [
            "MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used (line 2)"
        ]
    );
    assert!(check("FROM scratch AS a\nCMD [\"a\"]\nFROM a\nCMD [\"b\"]\n").is_empty());
}

#[test]
fn secrets_and_legacy_key_value() {
    assert_eq!(
        check("FROM scratch\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x\n"),
        [
            "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\") (line 2)",
            "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\") (line 3)"
        ]
    );
    assert_eq!(
        check("FROM scratch\nENV A 1\nLABEL b 2\n"),
        [
            "LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format (line 2)",
            "LegacyKeyValueFormat: \"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format (line 3)"
        ]
    );
    assert!(check("FROM scratch\nENV A=1\nLABEL b=2\nARG PUBLIC_KEY\n").is_empty());
}

#[test]
fn expose_rules() {
    assert_eq!(
        check("FROM scratch\nEXPOSE 80/TCP 8080:80\n"),
        [
            "ExposeProtoCasing: Defined protocol '80/TCP' in EXPOSE instruction should be lowercase (line 2)",
            "ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80' (line 2)"
        ]
    );
    assert!(check("FROM scratch\nEXPOSE 80 443/udp\n").is_empty());
}

#[test]
fn from_rules() {
    assert_eq!(
        check("FROM alpine:$VERSON\n"),
        [
            "InvalidDefaultArgInFrom: Default value for ARG alpine:$VERSON results in empty or invalid base image name (line 1)",
            "UndefinedArgInFrom: FROM argument 'VERSON' is not declared (line 1)"
        ]
    );
    assert_eq!(
        check("ARG VERSION=3\nFROM alpine:$VERSON\n"),
        [
            "InvalidDefaultArgInFrom: Default value for ARG alpine:$VERSON results in empty or invalid base image name (line 2)",
            "UndefinedArgInFrom: FROM argument 'VERSON' is not declared (did you mean VERSION?) (line 2)"
        ]
    );
    assert!(check("ARG VERSION=3\nFROM alpine:$VERSION\n").is_empty());
    // Declared without a default and given with --build-arg: the build works, but not
    // without the build arg.
    let given = LowerOptions {
        build_args: vec![("IMAGE".into(), "alpine".into())],
        ..LowerOptions::default()
    };
    assert_eq!(
        check_with("ARG IMAGE\nFROM $IMAGE\n", given, CheckOptions::default()),
        [
            "InvalidDefaultArgInFrom: Default value for ARG $IMAGE results in empty or invalid base image name (line 2)"
        ]
    );
    assert_eq!(
        check("FROM --platform=$TARGETPLATFORM scratch\n"),
        [
            "RedundantTargetPlatform: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior (line 1)"
        ]
    );
    assert_eq!(
        check("FROM --platform=linux/amd64 scratch AS build\n"),
        [
            "FromPlatformFlagConstDisallowed: FROM --platform flag should not use constant value \"linux/amd64\" (line 1)"
        ]
    );
    assert!(check("FROM --platform=linux/amd64 scratch AS build-amd64\n").is_empty());
    assert!(check("FROM --platform=$BUILDPLATFORM scratch\n").is_empty());
}

#[test]
fn stages_a_build_does_not_need_are_checked_only_with_all_stages() {
    let src = "FROM scratch AS unused\nCMD echo hi\nFROM scratch\nCOPY a /a\n";
    assert!(check(src).is_empty());
    let all = CheckOptions {
        all_stages: true,
        ..CheckOptions::default()
    };
    assert_eq!(
        check_with(src, LowerOptions::default(), all),
        [
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"
        ]
    );
}

#[test]
fn copy_ignored_file() {
    struct Ignore;
    impl IgnoreCheck for Ignore {
        fn ignored(&self, path: &str) -> bool {
            path == "secret" || path.starts_with("secret/")
        }
    }
    let opts = CheckOptions {
        all_stages: false,
        ignore: Some(&Ignore),
    };
    assert_eq!(
        check_with(
            "FROM scratch AS a\nCOPY secret/key /k\nADD ./secret /s\nFROM a\nCOPY --from=a secret /x\nCOPY ok /ok\n",
            LowerOptions::default(),
            opts
        ),
        [
            "CopyIgnoredFile: Attempting to Copy file \"secret/key\" that is excluded by .dockerignore (line 2)",
            "CopyIgnoredFile: Attempting to Add file \"secret\" that is excluded by .dockerignore (line 3)"
        ]
    );
}

#[test]
fn findings_do_not_change_the_graph() {
    let src = "FROM scratch as Base\nENV A 1\nCMD echo $B\nWORKDIR x\nEXPOSE 80/TCP\n";
    let df = parse(src).unwrap();
    let plain = kiln_parser::lower(&df, &LowerOptions::default(), &EmptyResolver).unwrap();
    let (checked, found) = lower_checked(
        &df,
        &LowerOptions::default(),
        &EmptyResolver,
        CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(plain, checked);
    assert!(!found.is_empty());
}

#[test]
fn invalid_base_image_platform() {
    struct Arm;
    impl kiln_parser::BaseResolver for Arm {
        fn resolve(&self, reference: &str) -> Result<kiln_parser::BaseImage, String> {
            let arch = if reference == "arm" { "arm64" } else { "amd64" };
            Ok(kiln_parser::BaseImage {
                platform: Some(kiln_parser::Platform {
                    os: "linux".into(),
                    architecture: arch.into(),
                    variant: None,
                }),
                ..Default::default()
            })
        }
    }
    let amd64 = LowerOptions {
        platform: Some(kiln_parser::Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }),
        ..LowerOptions::default()
    };
    let df = parse("FROM arm\nFROM amd\n").unwrap();
    let all = CheckOptions {
        all_stages: true,
        ..CheckOptions::default()
    };
    let (_, found) = lower_checked(&df, &amd64, &Arm, all).unwrap();
    let found: Vec<String> = found.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        found,
        [
            "InvalidBaseImagePlatform: Base image arm was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build (line 1)"
        ]
    );
}
