"""`libragen inspect`: placeholder registration; filled in by the loader."""


def add_parser(sub):
    p = sub.add_parser("inspect", help="print family, config, dtype and parameter count of a model file")
    p.add_argument("file", nargs="?")
    p.add_argument("--preset")
    p.set_defaults(run=lambda a: print("not yet"))
