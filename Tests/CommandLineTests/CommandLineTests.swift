import Foundation
import Testing
import TestSupport
@testable import PoolCore

/// `poolfs` as a user runs it: exit codes, one-line errors, JSON.
@Suite struct CommandLineTests {
    let poolfs = builtExecutable("poolfs")

    func poolfs(_ arguments: String..., in scratch: Scratch) throws -> (status: Int32, output: String) {
        try run(poolfs, arguments + ["--path", scratch.path])
    }

    @Test func aPoolsWholeLife() throws {
        let scratch = Scratch()
        var result = try poolfs("create", "cli", "--size", "32M", "--page-size", "4K", in: scratch)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("created pool 'cli'"))

        result = try poolfs("region", "create", "cli", "weights", "--size", "1M", in: scratch)
        #expect(result.status == 0, "\(result.output)")
        result = try poolfs("region", "list", "cli", in: scratch)
        #expect(result.output.hasPrefix("weights\t1M\t0:0x"))
        result = try poolfs("region", "clone", "cli", "weights", "weights-copy", in: scratch)
        #expect(result.status == 0 && result.output.hasPrefix("cloned region 'weights' as 'weights-copy' (1M)"), "\(result.output)")
        result = try poolfs("region", "list", "cli", in: scratch)
        #expect(result.output.contains("\tshares pages with 'weights', holds 0B itself"), "\(result.output)")
        result = try poolfs("region", "destroy", "cli", "weights-copy", in: scratch)
        #expect(result.status == 0, "\(result.output)")

        result = try poolfs("grow", "cli", "--by", "16M", in: scratch)
        #expect(result.status == 0 && result.output.contains("added shelf 1"), "\(result.output)")

        result = try poolfs("info", "cli", "--json", in: scratch)
        #expect(result.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        #expect(json["name"] as? String == "cli")
        #expect(json["pageSize"] as? Int == 4096)
        #expect((json["shelves"] as? [Any])?.count == 2)
        #expect((json["regions"] as? [[String: Any]])?.first?["name"] as? String == "weights")
        #expect(json["usedBytes"] as? Int == 1 << 20)

        result = try poolfs("info", "cli", in: scratch)
        #expect(result.output.contains("page size  4K"))
        #expect(result.output.contains("regions    1"))

        result = try poolfs("check", "cli", in: scratch)
        #expect(result.status == 0 && result.output.hasSuffix("clean"), "\(result.output)")

        result = try poolfs("region", "destroy", "cli", "weights", in: scratch)
        #expect(result.status == 0)
        result = try poolfs("destroy", "cli", in: scratch)
        #expect(result.status == 0)
        #expect(!SystemCall.exists(scratch.path + "/cli"))
    }

    /// Every mistake: exit 1 and one line that names the cause; never a trap.
    @Test func mistakesGetOneLineErrors() throws {
        let scratch = Scratch()
        _ = try poolfs("create", "p", "--size", "8M", in: scratch)
        let cases: [([String], String)] = [
            (["create", "a/b"], "invalid name 'a/b'"),
            (["create", "q", "--size", "0"], "invalid size '0'"),
            (["create", "q", "--size", "lots"], "invalid size 'lots'"),
            (["create", "q", "--size", "8M", "--page-size", "3K"], "invalid page size '3K'"),
            (["create", "q", "--size", "8M", "--page-size", "x"], "invalid page size 'x'"),
            (["create", "q", "--size", "8M", "--medium", "tape"], "invalid medium 'tape': a medium is dram or pmem"),
            (["create", "q", "--size", "64K"], "too small"),
            (["create", "q", "--size", "100T"], "not enough space"),
            (["create", "p", "--size", "8M"], "pool 'p' already exists"),
            (["info", "nope"], "pool 'nope' does not exist"),
            (["grow", "nope", "--by", "1G"], "pool 'nope' does not exist"),
            (["grow", "p", "--by", "1K"], "invalid size '1K'"),
            (["destroy", "nope"], "pool 'nope' does not exist"),
            (["check", "nope"], "pool 'nope' does not exist"),
            (["region", "create", "p", "r", "--size", "1G"], "pool 'p' is full"),
            (["region", "create", "p", "r", "--size", "0"], "invalid size '0'"),
            (["region", "destroy", "p", "r"], "region 'r' does not exist"),
            (["mount", "p", scratch.path + "/mnt", "-f", "-o", "noatime,bogus"], "invalid mount option 'bogus'"),
        ]
        #expect(mkdir(scratch.path + "/mnt", 0o755) == 0)
        for (arguments, expected) in cases {
            let result = try run(poolfs, arguments + ["--path", scratch.path])
            #expect(result.status == 1, "\(arguments): \(result.output)")
            #expect(result.output.hasPrefix("poolfs: "), "\(arguments): \(result.output)")
            #expect(result.output.contains(expected), "\(arguments): \(result.output)")
            #expect(!result.output.contains("\n"), "\(arguments): \(result.output)")
        }
    }

    @Test func aPathThatDoesNotExistIsRefusedNotMade() throws {
        let scratch = Scratch()
        let missing = scratch.path + "/no/such/dir"
        for arguments in [["create", "p", "--size", "8M"], ["info", "p"]] {
            let result = try run(poolfs, arguments + ["--path", missing])
            #expect(result.status == 1 && result.output == "poolfs: refusing \(missing): it does not exist "
                + "(--path takes an existing directory)", "\(result.output)")
        }
        #expect(!SystemCall.exists(scratch.path + "/no"))
    }

    @Test func execHelpPrintsHelp() throws {
        let result = try run(poolfs, ["exec", "--help"])
        #expect(result.status == 0 && result.output.contains("USAGE: poolfs exec"), "\(result.output)")
    }

    /// A home or pool directory that another user could write, own or
    /// redirect is refused by name, before anything in it is trusted.
    @Test func aHostileBaseDirectoryIsRefused() throws {
        let scratch = Scratch()
        let home = scratch.path + "/home"
        #expect(mkdir(home, 0o755) == 0)
        #expect(try run(poolfs, ["create", "p", "--size", "8M", "--path", home]).status == 0)
        func refused(_ expected: String, _ arguments: [String] = ["info", "p"], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try run(poolfs, arguments + ["--path", home])
            #expect(result.status == 1 && result.output.hasPrefix("poolfs: refusing ") && result.output.contains(expected),
                    "\(result.output)", sourceLocation: sourceLocation)
        }
        #expect(chmod(home, 0o777) == 0)
        try refused("others may write into it (mode 777")
        try refused("others may write into it", ["create", "q", "--size", "8M"])
        #expect(chmod(home, 0o1777) == 0)   // sticky, as /tmp: others cannot move what is ours
        #expect(try run(poolfs, ["info", "p", "--path", home]).status == 0)
        #expect(chmod(home, 0o755) == 0 && chown(home + "/p", 65534, 65534) == 0)
        try refused("owned by uid 65534")
        try refused("owned by uid 65534", ["destroy", "p"])
        #expect(chown(home + "/p", 0, 0) == 0 && chmod(home + "/p", 0o757) == 0)
        try refused("others may write into it")
        #expect(chmod(home + "/p", 0o755) == 0)
        // A pool directory swapped for a link to someone else's pool.
        #expect(rename(home + "/p", scratch.path + "/elsewhere") == 0 && symlink(scratch.path + "/elsewhere", home + "/p") == 0)
        try refused("it is a symbolic link")
        #expect(unlink(home + "/p") == 0 && rename(scratch.path + "/elsewhere", home + "/p") == 0)
        #expect(try run(poolfs, ["info", "p", "--path", home]).status == 0)
    }

    @Test func aDamagedPoolIsNamedAndLeftAlone() throws {
        let scratch = Scratch()
        _ = try poolfs("create", "hurt", "--size", "8M", in: scratch)
        let fd = open(scratch.file("hurt", "shelf-0"), O_WRONLY)
        _ = pwrite(fd, "XXXXXXXX", 8, 0)
        close(fd)
        for command in [["info", "hurt"], ["check", "hurt"], ["grow", "hurt", "--by", "8M"]] {
            let result = try run(poolfs, command + ["--path", scratch.path])
            #expect(result.status == 1)
            #expect(result.output.contains("shelf-0 is damaged: bad magic"), "\(result.output)")
        }
        // A damaged pool can still be removed.
        #expect(try poolfs("destroy", "hurt", in: scratch).status == 0)
    }

    @Test func checkAndDestroyRefuseAPoolInUse() throws {
        let scratch = Scratch()
        _ = try poolfs("create", "busy", "--size", "8M", in: scratch)
        let holder = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "busy"])
        let opened = holder.readLine() ?? ""
        #expect(opened.hasPrefix("open"))
        let pid = opened.split(separator: " ").last.map(String.init) ?? "?"
        for command in ["check", "destroy"] {
            let result = try poolfs(command, "busy", in: scratch)
            #expect(result.status == 1)
            #expect(result.output == "poolfs: pool 'busy' is in use by pid \(pid)", "\(result.output)")
        }
        let info = try poolfs("info", "busy", in: scratch)
        #expect(info.output.contains("processes  \(pid)"), "\(info.output)")
        #expect(holder.ask("quit") == "bye")
        holder.wait()
        #expect(try poolfs("destroy", "busy", in: scratch).status == 0)
    }

    /// check reports what a killed process left and leaves it there (the
    /// next open, or --repair, recovers it): a second check says the same.
    @Test func checkLeavesThePoolAsItFoundIt() throws {
        let scratch = Scratch()
        _ = try poolfs("create", "dead", "--size", "8M", "--page-size", "4K", in: scratch)
        let holder = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "dead"])
        #expect(holder.readLine()?.hasPrefix("open") == true)
        #expect(holder.ask("alloc 3").hasPrefix("0:0x"))
        holder.kill9()
        let first = try poolfs("check", "dead", in: scratch)
        #expect(first.status == 0 && first.output.contains("left by a dead process: process "), "\(first.output)")
        let second = try poolfs("check", "dead", in: scratch)
        #expect(second.output == first.output)
        let repaired = try poolfs("check", "dead", "--repair", in: scratch)
        #expect(repaired.status == 0 && repaired.output.contains("repaired: "), "\(repaired.output)")
        #expect(try poolfs("check", "dead", in: scratch).output.hasSuffix("clean"))
    }

    @Test func heapsFromTheCommandLine() throws {
        let scratch = Scratch()
        _ = try poolfs("create", "hp", "--size", "32M", in: scratch)
        #expect(try poolfs("heap", "create", "hp", "objects", in: scratch).output == "created heap 'objects'")
        #expect(try poolfs("heap", "list", "hp", in: scratch).output == "objects")
        let pool = try Pool.open(name: "hp", at: scratch.path)
        let heap = try pool.openHeap(name: "objects")
        var kept: [GlobalAddress] = []
        for size in [24, 24, 24, 500, 100_000, 1 << 20] { kept.append(try heap.allocate(size: size)) }
        pool.close()

        let stats = try poolfs("heap", "stats", "hp", "objects", "--json", in: scratch)
        #expect(stats.status == 0, "\(stats.output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(stats.output.utf8)) as? [String: Any])
        #expect(json["objects"] as? Int == 6)
        #expect((json["objectsPerClass"] as? [String: Int])?["32"] == 3)
        #expect((json["objectsPerClass"] as? [String: Int])?["large"] == 1)
        let text = try poolfs("heap", "stats", "hp", "objects", in: scratch)
        #expect(text.output.contains("objects        6"), "\(text.output)")
        let info = try poolfs("info", "hp", in: scratch)
        #expect(info.output.contains("heaps      1\n  objects  "), "\(info.output)")

        let busy = try poolfs("heap", "destroy", "hp", "objects", in: scratch)
        #expect(busy.status == 1)
        #expect(busy.output == "poolfs: heap 'objects' is in use: it still holds 6 objects")
        #expect(try poolfs("heap", "create", "hp", "objects", in: scratch).output == "poolfs: heap 'objects' already exists")
        #expect(try poolfs("heap", "stats", "hp", "nope", in: scratch).output == "poolfs: heap 'nope' does not exist")
        #expect(try poolfs("heap", "create", "hp", "bad/name", in: scratch).status == 1)

        let reopened = try Pool.open(name: "hp", at: scratch.path)
        let again = try reopened.openHeap(name: "objects")
        for address in kept { try again.free(address) }
        reopened.close()
        #expect(try poolfs("heap", "destroy", "hp", "objects", in: scratch).status == 0)
        #expect(try poolfs("heap", "list", "hp", in: scratch).output == "")
        let check = try poolfs("check", "hp", in: scratch).output
        #expect(check.hasSuffix("clean"))
        #expect(check.contains("0 in heaps (0 objects)"), "\(check)")
    }

    @Test func everyCommandExplainsItself() throws {
        for command in [[], ["create"], ["info"], ["grow"], ["destroy"], ["region"], ["region", "create"],
                        ["region", "list"], ["region", "destroy"], ["heap"], ["heap", "create"], ["heap", "destroy"],
                        ["heap", "list"], ["heap", "stats"], ["check"], ["bench"]] {
            let result = try run(poolfs, command + ["--help"])
            #expect(result.status == 0, "\(command)")
            #expect(result.output.contains("USAGE: poolfs"), "\(command)")
        }
    }
}
