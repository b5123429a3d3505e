"""rnnbench/run/overrides.py: the command line composed as Hydra will compose it, before Hydra starts; what
Hydra would refuse is said in rnnbench's format with the nearest key, group or option."""

from __future__ import annotations

import pytest

from conftest import REPO
from rnnbench.errors import ConfigError
from rnnbench.run import overrides
from rnnbench.run.config import CONF_DIR


@pytest.mark.parametrize("argv", [
    ["cell=gru", "task=adding", "train.max_steps=3"],
    ["-m", "cell=gru,lstm", "train.seed=range(0,3)", "hydra/launcher=basic"],
    ["+experiment=quickstart"],
    ["-m", "+experiment=search_lr_adding", "optim.lr=tag(log, interval(1e-4, 1e-1))"],  # Optuna draws it
    ["-cp", "/elsewhere", "-cn", "mine", "cell=anything"],  # another primary config folder: Hydra's to compose
    ["--help"],
])
def test_what_composes_passes(argv):
    overrides.check(argv, CONF_DIR)


@pytest.mark.parametrize("argv, message", [
    (["-m", "cel=gru,lstm"], "cel=gru: the config has no key or config group 'cel'.\nDid you mean cell=gru?"),
    (["task=adding", "task.seq_lne=50"], "task.seq_lne=50: 'task' has no key 'seq_lne'.\nDid you mean task.seq_len=50?"),
    (["modle.hidden_size=8"], "modle.hidden_size=8: the config has no key or config group 'modle'. Did you mean "
                              "model.hidden_size=8?"),
    (["cell=gruu"], "cell=gruu: config group 'cell' has no option 'gruu'; did you mean cell=gru?"),
    (["task=adding", "task.eval_lengths=50"], "task.eval_lengths=50 is not allowed: task.eval_lengths takes a list, "
                                              "e.g. task.eval_lengths=[50,100]"),
    (["train.max_steps=ten"], "train.max_steps=ten: Value 'ten' of type 'str' could not be converted to Integer"),
])
def test_what_hydra_would_refuse_is_said_with_the_nearest_name(argv, message):
    with pytest.raises(ConfigError) as error:
        overrides.check(argv, CONF_DIR)
    assert message in str(error.value)


def test_a_users_config_folder_is_searched_too():
    """Options of the user's own groups (examples/my_research/conf) are found and suggested."""
    user = str(REPO / "examples" / "my_research" / "conf")
    overrides.check(["--config-dir", user, "cell=my_mgu", "task=parity"], CONF_DIR)
    with pytest.raises(ConfigError, match=r"cell=my_mug: config group 'cell' has no option 'my_mug'; did you mean "
                                          r"cell=my_mgu\?"):
        overrides.check(["--config-dir", user, "cell=my_mug"], CONF_DIR)
    overrides.check([f"hydra.searchpath=[file://{user}]", "cell=my_mgu", "task=parity"], CONF_DIR)  # the other way
