use super::*;

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

#[test]
fn records_round_trip() {
    let line = LogLine {
        replica: Some("web-3f9k2".into()),
        next: LogPos {
            seq: 3,
            offset: 1234,
        },
        time: at(1_795_765_402, 123_456_789),
        stream: LogStream::Stderr,
        partial: false,
        text: b"hello  world ".to_vec(),
    };
    let encoded = line.encode();
    assert_eq!(
        String::from_utf8_lossy(&encoded),
        "web-3f9k2:0000000003:1234 2026-11-27T07:43:22.123456789Z stderr F hello  world \n"
    );
    assert_eq!(LogLine::parse(&encoded[..encoded.len() - 1]), Some(line));
    let bare = LogLine::parse(b"0000000001:7 2026-11-27T07:43:22.000000001Z stdout P x y").unwrap();
    assert_eq!(bare.replica, None);
    assert_eq!(bare.next, LogPos { seq: 1, offset: 7 });
    assert!(bare.partial);
    assert_eq!(bare.text, b"x y");
    let empty = LogLine::parse(b"1:7 2026-11-27T07:43:22Z stdout F ").unwrap();
    assert!(empty.text.is_empty());
    for bad in [
        &b"garbage"[..],
        b"1:7 yesterday stdout F x",
        b"1:x 2026-11-27T07:43:22Z stdout F x",
        b"1:7 2026-11-27T07:43:22Z stdin F x",
        b"1:7 2026-11-27T07:43:22Z stdout Q x",
        b":1:7 2026-11-27T07:43:22Z stdout F x",
    ] {
        assert_eq!(
            LogLine::parse(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn cursors_round_trip() {
    let c: LogCursor = "web-1:0000000002:42".parse().unwrap();
    assert_eq!(c.replica, "web-1");
    assert_eq!(c.pos, LogPos { seq: 2, offset: 42 });
    assert_eq!(c.to_string(), "web-1:0000000002:42");
    assert!("2:42".parse::<LogCursor>().is_err());
    assert!("w:x:42".parse::<LogCursor>().is_err());
}

#[test]
fn since_takes_durations_times_and_unix_seconds() {
    let now = at(1_795_765_402, 0);
    let ok = |s: &str| parse_since(s, now).unwrap();
    assert_eq!(ok("10m"), at(1_795_765_402 - 600, 0));
    assert_eq!(ok("2h"), at(1_795_765_402 - 7200, 0));
    assert_eq!(ok("30s"), at(1_795_765_372, 0));
    assert_eq!(ok("2026-11-27T07:43:22Z"), now);
    assert_eq!(ok("2026-11-27T07:43:22.5Z"), at(1_795_765_402, 500_000_000));
    assert_eq!(ok("2026-11-27T08:43:22+01:00"), now);
    assert_eq!(ok("2026-11-27T06:43:22-01:00"), now);
    assert_eq!(ok("1795765402"), now);
    assert_eq!(ok("1795765402.25"), at(1_795_765_402, 250_000_000));
    let err = parse_since("yesterday", now).unwrap_err();
    assert!(err.contains("yesterday") && err.contains("30s"), "{err}");
}

/// The error for `s`, after checking that it names what was given and the accepted forms.
fn since_error(s: &str) -> String {
    let err = parse_since(s, at(1_795_765_402, 0)).unwrap_err();
    assert!(
        err.contains("30s") && err.contains("RFC 3339"),
        "{s}: {err}"
    );
    err
}

#[test]
fn since_1e30_is_an_error_not_a_panic() {
    let err = since_error("1e30");
    assert!(err.contains("\"1e30\" is out of range"), "{err}");
}

#[test]
fn since_1e19_is_an_error_not_a_panic() {
    // Fits a `Duration` but not a `SystemTime` (and no four-digit year).
    assert!(since_error("1e19").contains("out of range"));
}

#[test]
fn since_i64_max_is_an_error_not_a_panic() {
    assert!(since_error("9223372036854775807").contains("out of range"));
    assert!(since_error("18446744073709551615").contains("out of range"));
}

#[test]
fn since_9999999999999999s_reads_from_the_start_not_a_panic() {
    // A duration reaching back before 1970 used to give a time the formatter panics on.
    let now = at(1_795_765_402, 0);
    assert_eq!(parse_since("9999999999999999s", now).unwrap(), UNIX_EPOCH);
    assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
}

#[test]
fn since_multi_byte_text_is_an_error_not_a_panic() {
    // `1é12345` put the offset split inside the `é`.
    for s in [
        "5é",
        "é",
        "1é12345",
        "2026-11-27T07:43:22é00:00",
        "2026-11-27T07:43:2+é:00",
    ] {
        assert!(since_error(s).contains("not a duration or a time"), "{s}");
    }
}

#[test]
fn since_negative_nan_and_huge_text_are_errors() {
    assert!(since_error("-1").contains("out of range"));
    assert!(since_error("NaN").contains("not a duration or a time"));
    assert!(since_error("inf").contains("not a duration or a time"));
    assert!(since_error("").contains("empty"));
    let long = "x".repeat(10_000);
    let err = since_error(&long);
    assert!(err.len() < 400, "the value is shortened: {err}");
    assert!(err.contains("(10000 bytes)"), "{err}");
}

#[test]
fn since_offsets_at_the_edges_of_the_range() {
    let now = at(1_795_765_402, 0);
    assert_eq!(
        parse_since("1970-01-01T00:30:00+01:00", now).unwrap(),
        UNIX_EPOCH
    );
    assert!(since_error("9999-12-31T23:59:59-01:00").contains("after the year 9999"));
    assert!(since_error("2026-11-27T07:43:22+24:00").contains("not a duration"));
    assert_eq!(
        parse_since("253402300799", now).unwrap(),
        at(LATEST_SECS, 0)
    );
    assert!(since_error("253402300800").contains("out of range"));
}

#[test]
fn times_outside_the_format_are_written_at_its_edges() {
    let before = UNIX_EPOCH - Duration::from_secs(5);
    assert_eq!(format_time(before), "1970-01-01T00:00:00.000000000Z");
    let after = at(LATEST_SECS + 100, 0);
    assert_eq!(format_time(after), "9999-12-31T23:59:59.999999999Z");
}

#[tokio::test]
async fn lines_are_split_across_chunks() {
    let chunks: Vec<std::result::Result<bytes::Bytes, ClientError>> = vec![
        Ok(bytes::Bytes::from_static(b"a\nb")),
        Ok(bytes::Bytes::from_static(b"c\n\nd")),
    ];
    let lines: Vec<Vec<u8>> = split_lines(futures::stream::iter(chunks))
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert_eq!(
        lines,
        [b"a".to_vec(), b"bc".to_vec(), vec![], b"d".to_vec()]
    );
}

mod properties {
    //! The parsers of log input never panic, and what they accept round-trips.

    use proptest::prelude::*;

    use super::*;

    /// Any time a record can carry: 1970 to the end of the year 9999.
    fn record_time() -> impl Strategy<Value = SystemTime> {
        (0..=LATEST_SECS, 0..1_000_000_000u32).prop_map(|(s, n)| at(s, n))
    }

    fn line() -> impl Strategy<Value = LogLine> {
        (
            prop::option::of("[a-z][a-z0-9-]{0,10}-[a-z0-9]{1,6}"),
            any::<u64>(),
            any::<u64>(),
            record_time(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..64),
        )
            .prop_map(
                |(replica, seq, offset, time, stderr, partial, text)| LogLine {
                    replica,
                    next: LogPos { seq, offset },
                    time,
                    stream: if stderr {
                        LogStream::Stderr
                    } else {
                        LogStream::Stdout
                    },
                    partial,
                    text,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn since_never_panics_and_stays_in_the_record_range(s in ".{0,40}", now in record_time()) {
            if let Ok(t) = parse_since(&s, now) {
                prop_assert!(t >= UNIX_EPOCH && t <= latest(), "{s:?}");
                format_time(t);
            }
        }

        #[test]
        fn since_of_numbers_and_durations_never_panics(
            n in any::<u64>(),
            x in any::<f64>(),
            unit in prop::sample::select(vec!["", "s", "ms", "m", "h", "d", "w", "y", "ns", "e30"]),
        ) {
            let now = at(1_795_765_402, 0);
            for s in [format!("{n}{unit}"), format!("{x}{unit}"), format!("-{n}{unit}"), format!("{x:e}")] {
                if let Ok(t) = parse_since(&s, now) {
                    prop_assert!(t >= UNIX_EPOCH && t <= latest(), "{s:?}");
                }
            }
        }

        #[test]
        fn since_reads_back_every_formatted_time(t in record_time()) {
            prop_assert_eq!(parse_since(&format_time(t), at(0, 0)), Ok(t));
        }

        #[test]
        fn records_never_panic_and_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..120), l in line()) {
            let _ = LogLine::parse(&bytes);
            let encoded = l.encode();
            prop_assert_eq!(LogLine::parse(&encoded[..encoded.len() - 1]), Some(l));
        }

        #[test]
        fn cursors_never_panic_and_round_trip(s in ".{0,40}", r in "[a-z][a-z0-9-]{0,10}", seq in any::<u64>(), offset in any::<u64>()) {
            let _ = s.parse::<LogCursor>();
            let cursor = LogCursor { replica: r, pos: LogPos { seq, offset } };
            prop_assert_eq!(cursor.to_string().parse::<LogCursor>(), Ok(cursor));
        }
    }
}
