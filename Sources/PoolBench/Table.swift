import Foundation

/// The text form: one row per workload, one column per peer, then poolfs's
/// ratio to each peer.
enum Table {
    static func number(_ value: Double) -> String {
        if value >= 1e6 { return String(format: "%.2fM", value / 1e6) }
        if value >= 1e3 { return String(format: "%.1fK", value / 1e3) }
        return String(format: "%.1f", value)
    }

    static func render(_ report: Report) -> String {
        let m = report.machine
        var out = "machine: \(m.cpu), \(m.cores) cores, \(m.memory), Linux \(m.kernel), \(m.date)\n\n"
        let peers = ["poolfs"] + Array(Set(report.workloads.flatMap { $0.results.keys }).subtracting(["poolfs"])).sorted()
        out += "| workload | unit | " + peers.joined(separator: " | ") + " | "
            + peers.dropFirst().map { "poolfs/\($0)" }.joined(separator: " | ") + " |\n"
        out += "|" + String(repeating: "---|", count: 2 + peers.count * 2 - 1) + "\n"
        for workload in report.workloads {
            let values = peers.map { workload.results[$0].map(number) ?? "-" }
            let ratios = peers.dropFirst().map { peer -> String in
                guard let mine = workload.results["poolfs"], let theirs = workload.results[peer], theirs > 0 else { return "-" }
                return String(format: "%.2f×", mine / theirs)
            }
            out += "| \(workload.name) | \(workload.unit) | " + values.joined(separator: " | ") + " | "
                + ratios.joined(separator: " | ") + " |\n"
        }
        return out
    }
}
