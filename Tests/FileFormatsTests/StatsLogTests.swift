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

    @Test("a step the writer writes reads back equal, every field; lines without the newer fields still parse")
    func writerReaderRoundTrip() throws {
        var step = StatsLog.Step(step: 3, routed: [[5, 3], [4, 4]], dropRate: [0.25, 0], imbalance: [1.25, 1], bytes: [640, 1024])
        step.tokens = [4, 4]
        step.kept = [[3, 3], [4, 4]]
        step.droppedPerExpert = [[2, 0], [0, 0]]
        step.capacity = [[3, 3], nil]
        step.bytesSentByRank = [[320, 320], [512, 512]]
        step.bytesReceivedByRank = [[384, 256], [512, 512]]
        step.rowsByRank = [[3, 2], [4, 4]]
        step.nextCapacity = [.string("configured"), .object([("capacity_factor", .number(1.5))])]
        step.phaseNames = ["gate", "dispatch"]
        step.phaseSeconds = [0.001, 0.0125]
        step.expertSecondsByRank = [0.5, 0.375]
        step.placementChanges = [StatsLog.PlacementChange(layer: 1, group: 0, predictedImbalanceBefore: 1.5, predictedImbalanceAfter: 1.125,
                                                          movedExperts: 2, migrationBytes: 4096)]
        let log = try parse([step.jsonLine(policy: "dynamoe"), step.jsonLine(policy: "dynamoe")])
        #expect(log.policy == "dynamoe" && log.steps == [step, step])
        #expect(log.steps[0].dropped == [2, 0] && log.steps[0].placementChangedLayers == [1] && log.steps[0].migrationBytes == 4096)
        // The minimal line of an older log: the newer fields stay empty.
        var minimal = StatsLog.Step(step: 0, routed: [[3, 1]], dropRate: [0], imbalance: [1.5], bytes: [64])
        minimal.droppedPerExpert = [[0, 0]]
        let older = try parse([#"{"step":0,"policy":"static","layers":[\#(layer)}]}"#])
        minimal.kept = [[3, 1]]
        #expect(older.steps == [minimal])
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
