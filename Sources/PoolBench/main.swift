import Foundation
import PoolCore

// poolfs-bench BENCHMARK [--seconds S] [--json]: run by `poolfs bench`.
var arguments = Array(CommandLine.arguments.dropFirst())
let json = arguments.contains("--json")
arguments.removeAll { $0 == "--json" }
var seconds = 1.0
if let i = arguments.firstIndex(of: "--seconds"), i + 1 < arguments.count, let s = Double(arguments[i + 1]), s > 0 {
    seconds = s
    arguments.removeSubrange(i...(i + 1))
}
guard arguments.count == 1 else {
    FileHandle.standardError.write("usage: poolfs bench pages [--seconds S] [--json]\n".data(using: .utf8)!)
    exit(2)
}

let workloads: [Workload]
do {
    switch arguments[0] {
    case "pages": workloads = try PagesBenchmark(seconds: seconds).run()
    default:
        FileHandle.standardError.write("poolfs: unknown benchmark '\(arguments[0])' (known: pages)\n".data(using: .utf8)!)
        exit(2)
    }
} catch {
    FileHandle.standardError.write("poolfs: \(error)\n".data(using: .utf8)!)
    exit(1)
}

let report = Report(machine: .current(), workloads: workloads)
if json {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(report), as: UTF8.self))
} else {
    print(Table.render(report))
}
