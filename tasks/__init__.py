"""The tasks, imported as `rnnbench.tasks` (setup.py maps this top-level folder there): the interface
(`base`), the generated problems (`synthetic`, `copy`, `adding`, `formal_languages`, `mqar`,
`induction_heads`), language modelling, sequence classification (`seq_image`, `text`) and the data
files (`data`). They know nothing of models or the trainer; the model reads a task's `IOSpec`."""
