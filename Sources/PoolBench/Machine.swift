import Foundation

/// What the numbers were measured on, printed with every result.
struct Machine: Codable {
    var cpu: String
    var cores: Int
    var memory: String
    var kernel: String
    var date: String

    static func current() -> Machine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let total = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal") }
            .map { $0.split(separator: " ").dropFirst().first.map(String.init) ?? "" } ?? ""
        let gib = (Double(total) ?? 0) / 1024 / 1024
        var name = utsname()
        uname(&name)
        let kernel = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let formatter = ISO8601DateFormatter()
        return Machine(cpu: model, cores: ProcessInfo.processInfo.activeProcessorCount,
                       memory: String(format: "%.0f GiB", gib), kernel: kernel, date: formatter.string(from: Date()))
    }
}

struct Workload: Codable {
    var name: String
    var unit: String
    var results: [String: Double]
}

struct Report: Codable {
    var machine: Machine
    var workloads: [Workload]
}
