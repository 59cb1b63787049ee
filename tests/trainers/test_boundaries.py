from __future__ import annotations

import subprocess
import sys


def test_trainer_entry_point_imports_neither_kafka_nor_mlflow():
    code = (
        "import sys\n"
        "import distilld.trainers.__main__, distilld.trainers.pair_bootstrap, distilld.trainers.config\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kafka', 'mlflow'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]"
