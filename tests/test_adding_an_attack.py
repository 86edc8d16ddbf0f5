"""Adding a fifth attack is its own module and one registry line: an attack defined here, registered in
:data:`mi_art.attacks.ATTACKS` before the rest of the library is imported (as the registry module's line
does), runs from the CLI, is a valid grid attack and gets the benchmark's rows, with nothing else edited."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FIFTH_ATTACK = textwrap.dedent('''
    import json, sys
    import torch
    from mi_art.attacks import ATTACKS, GANInversionAttack
    from mi_art.attacks.search import point_search


    class PlainSearch(GANInversionAttack):
        """GMI's point search with the identity loss alone (no prior term): an attack the library lacks."""
        needs_discriminator = False
        prior = "gmi"

        def _run(self, labels):
            labels = labels.repeat_interleave(self.n_reconstructions)
            bar = self._progress(len(labels))
            try:
                return point_search(self.generator, labels,
                                    lambda x, y, it: self._objective(x, y, x.new_zeros(len(x)), it),
                                    latent_dim=self._latent_dim, iterations=self.iterations,
                                    learning_rate=self.learning_rate, momentum=0.9, batch_size=self.batch_size,
                                    bar=bar)
            finally:
                bar.close()


    ATTACKS["plain"] = PlainSearch  # the registry line

    from click.testing import CliRunner
    from mi_art.evaluations.cli import main
    from mi_art.evaluations.config_rules import PARAMETER_RULES
    sys.path.insert(0, sys.argv[2])
    import attack_variants

    result = CliRunner().invoke(main, ["attack", "--dataset", "digits", "--attack", "plain", "--variant", "lomma",
                                       "--out", sys.argv[1] + "/run", "--cache-dir", sys.argv[1] + "/cache",
                                       "--iterations", "10", "--n-reconstructions", "2", "--target-epochs", "3",
                                       "--judge-epochs", "3", "--gmi-steps", "5", "--surrogate-steps", "2",
                                       "--quiet"])
    print(json.dumps({"exit_code": result.exit_code, "output": result.output,
                      "grid_accepts": PARAMETER_RULES["attack"]("attack", "plain"),
                      "rows": [name for attack, _, name in attack_variants.METHODS if attack == "plain"]}))
''')


def test_a_fifth_attack_needs_only_its_module_and_the_registry_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", FIFTH_ATTACK, str(tmp_path), str(REPO / "benchmarks")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exit_code"] == 0, report["output"]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["attack"] == "plain" and record["variant"] == "lomma" and record["n_reconstructions"] == 2
    assert record["reg_weight"] > 0  # LOM's p_reg reached the new attack through the shared objective
    assert report["grid_accepts"] == "plain"
    assert report["rows"] == ["PlainSearch", "PlainSearch+LOM", "PlainSearch+MA", "PlainSearch+LOMMA"]
