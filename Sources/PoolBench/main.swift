import Foundation
import PoolCore

// poolfs-bench BENCHMARK [--seconds S] [--json]: run by `poolfs bench`.
if CommandLine.arguments.count > 2 && CommandLine.arguments[1] == "heap-worker" {
    do {
        try HeapWorker.main(Array(CommandLine.arguments.dropFirst(2)))
        exit(0)
    } catch {
        print("error: \(error)")
        exit(1)
    }
}
var arguments = Array(CommandLine.arguments.dropFirst())
let json = arguments.contains("--json")
arguments.removeAll { $0 == "--json" }
var seconds = 1.0
if let i = arguments.firstIndex(of: "--seconds"), i + 1 < arguments.count, let s = Double(arguments[i + 1]), s > 0 {
    seconds = s
    arguments.removeSubrange(i...(i + 1))
}
guard arguments.count == 1 else {
    FileHandle.standardError.write("usage: poolfs bench pages|heap|remote [--seconds S] [--json]\n".data(using: .utf8)!)
    exit(2)
}

let workloads: [Workload]
do {
    switch arguments[0] {
    case "pages": workloads = try PagesBenchmark(seconds: seconds).run()
    case "heap": workloads = try HeapBenchmark(seconds: seconds).run()
    case "remote": workloads = try RemoteBenchmark(seconds: seconds).run()
    default:
        FileHandle.standardError.write("poolfs: unknown benchmark '\(arguments[0])' (known: pages, heap, remote)\n".data(using: .utf8)!)
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
