import Testing
@testable import FileFormats

@Suite("Stats log: per-rank rows and expert time")
struct StatsLogTests {
    let layer = #"{"routed":[3,1],"dropped":[0,0],"drop_rate":0,"imbalance":1.5,"dispatch_bytes":64"#

    func parse(_ lines: [String]) throws(StatsLogError) -> StatsLog {
        try StatsLog.parse(Array((lines.joined(separator: "\n") + "\n").utf8), path: "s.jsonl")
    }

    @Test("rows_by_rank and expert_seconds_by_rank are read when present, and older logs without them still parse")
    func perRankFields() throws {
        let log = try parse([#"{"step":0,"policy":"static","expert_seconds_by_rank":[0.5,0.25],"layers":[\#(layer),"rows_by_rank":[3,1]}]}"#])
        #expect(log.steps[0].rowsByRank == [[3, 1]] && log.steps[0].expertSecondsByRank == [0.5, 0.25])
        let older = try parse([#"{"step":0,"policy":"static","layers":[\#(layer)}]}"#])
        #expect(older.steps[0].rowsByRank.isEmpty && older.steps[0].expertSecondsByRank.isEmpty)
    }

    @Test("token counts are read when present; a negative one is refused naming the file, line and field")
    func tokenCounts() throws {
        let log = try parse([#"{"step":0,"policy":"static","layers":[\#(layer),"tokens":4}]}"#])
        #expect(log.steps[0].tokens == [4])
        #expect { try parse([#"{"step":0,"policy":"static","layers":[\#(layer),"tokens":4}]}"#,
                             #"{"step":1,"policy":"static","layers":[\#(layer),"tokens":-3}]}"#]) } throws: {
            "\($0)".contains("s.jsonl") && "\($0)".contains("line 2") && "\($0)".contains("layers[0].tokens") && "\($0)".contains("≥ 0")
        }
    }

    @Test("per-rank fields that cannot be right are refused, naming the line and field")
    func badPerRankFields() {
        #expect { try parse([#"{"step":0,"policy":"static","expert_seconds_by_rank":[-1],"layers":[\#(layer)}]}"#]) } throws: {
            "\($0)".contains("line 1") && "\($0)".contains("expert_seconds_by_rank[0]")
        }
        #expect { try parse([#"{"step":0,"policy":"static","layers":[\#(layer),"rows_by_rank":[1]},\#(layer)}]}"#]) } throws: {
            "\($0)".contains("rows_by_rank is given for some layers only")
        }
    }

    @Test("kept rows and placement changes are read when present; kept defaults to routed; bad ones are refused")
    func keptAndPlacementChanges() throws {
        let change = #""placement_changes":[{"layer":0,"group":0,"moved_experts":2,"migration_bytes":4096}]"#
        let log = try parse([#"{"step":0,"policy":"static",\#(change),"layers":[\#(layer),"kept":[2,1]}]}"#])
        #expect(log.steps[0].kept == [[2, 1]] && log.steps[0].placementChangedLayers == [0] && log.steps[0].migrationBytes == 4096)
        let older = try parse([#"{"step":0,"policy":"static","layers":[\#(layer)}]}"#])
        #expect(older.steps[0].kept == [[3, 1]] && older.steps[0].placementChangedLayers.isEmpty)
        #expect { try parse([#"{"step":0,"policy":"static","layers":[\#(layer),"kept":[4,1]}]}"#]) } throws: {
            "\($0)".contains("line 1") && "\($0)".contains("layers[0].kept")
        }
        #expect { try parse([#"{"step":0,"policy":"static","placement_changes":[{"layer":3,"migration_bytes":0}],"layers":[\#(layer)}]}"#]) } throws: {
            "\($0)".contains("placement_changes[0].layer")
        }
    }
}
