"""MITRE ATT&CK (Enterprise) tactics for the techniques our rules cite, so every finding says why an attacker does it.

Kept here, not fetched: the suite never reaches the network at run time. The mapping is ATT&CK's own (each technique
page lists its tactics); a sub-technique inherits its parent's tactics. A rule citing a technique not listed here
names its tactics itself (`tactics:` in the rule file).
"""

from __future__ import annotations

TACTICS: dict[str, str] = {
    "TA0043": "Reconnaissance", "TA0042": "Resource Development", "TA0001": "Initial Access", "TA0002": "Execution",
    "TA0003": "Persistence", "TA0004": "Privilege Escalation", "TA0005": "Defense Evasion",
    "TA0006": "Credential Access", "TA0007": "Discovery", "TA0008": "Lateral Movement", "TA0009": "Collection",
    "TA0011": "Command and Control", "TA0010": "Exfiltration", "TA0040": "Impact",
}
_BY_NAME = {name.lower(): tactic for tactic, name in TACTICS.items()}

# technique -> (name, tactic ids), in ATT&CK's order of the kill chain
TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T1005": ("Data from Local System", ("TA0009",)),
    "T1021.007": ("Remote Services: Cloud Services", ("TA0008",)),
    "T1037": ("Boot or Logon Initialization Scripts", ("TA0003", "TA0004")),
    "T1041": ("Exfiltration Over C2 Channel", ("TA0010",)),
    "T1059.004": ("Command and Scripting Interpreter: Unix Shell", ("TA0002",)),
    "T1068": ("Exploitation for Privilege Escalation", ("TA0004",)),
    "T1070": ("Indicator Removal", ("TA0005",)),
    "T1072": ("Software Deployment Tools", ("TA0002", "TA0008")),
    "T1071": ("Application Layer Protocol", ("TA0011",)),
    "T1074": ("Data Staged", ("TA0009",)),
    "T1078": ("Valid Accounts", ("TA0001", "TA0003", "TA0004", "TA0005")),
    "T1078.004": ("Valid Accounts: Cloud Accounts", ("TA0001", "TA0003", "TA0004", "TA0005")),
    "T1090": ("Proxy", ("TA0011",)),
    "T1090.003": ("Proxy: Multi-hop Proxy", ("TA0011",)),
    "T1098": ("Account Manipulation", ("TA0003", "TA0004")),
    "T1098.001": ("Account Manipulation: Additional Cloud Credentials", ("TA0003", "TA0004")),
    "T1098.003": ("Account Manipulation: Additional Cloud Roles", ("TA0003", "TA0004")),
    "T1102": ("Web Service", ("TA0011",)),
    "T1105": ("Ingress Tool Transfer", ("TA0011",)),
    "T1110": ("Brute Force", ("TA0006",)),
    "T1110.001": ("Brute Force: Password Guessing", ("TA0006",)),
    "T1110.003": ("Brute Force: Password Spraying", ("TA0006",)),
    "T1110.004": ("Brute Force: Credential Stuffing", ("TA0006",)),
    "T1133": ("External Remote Services", ("TA0001", "TA0003")),
    "T1136": ("Create Account", ("TA0003",)),
    "T1136.003": ("Create Account: Cloud Account", ("TA0003",)),
    "T1195": ("Supply Chain Compromise", ("TA0001",)),
    "T1195.001": ("Supply Chain Compromise: Compromise Software Dependencies and Development Tools", ("TA0001",)),
    "T1195.002": ("Supply Chain Compromise: Compromise Software Supply Chain", ("TA0001",)),
    "T1199": ("Trusted Relationship", ("TA0001",)),
    "T1204": ("User Execution", ("TA0002",)),
    "T1213": ("Data from Information Repositories", ("TA0009",)),
    "T1222": ("File and Directory Permissions Modification", ("TA0005",)),
    "T1484": ("Domain or Tenant Policy Modification", ("TA0004", "TA0005")),
    "T1484.002": ("Domain or Tenant Policy Modification: Trust Modification", ("TA0004", "TA0005")),
    "T1485": ("Data Destruction", ("TA0040",)),
    "T1489": ("Service Stop", ("TA0040",)),
    "T1496": ("Resource Hijacking", ("TA0040",)),
    "T1526": ("Cloud Service Discovery", ("TA0007",)),
    "T1528": ("Steal Application Access Token", ("TA0006",)),
    "T1530": ("Data from Cloud Storage", ("TA0009",)),
    "T1531": ("Account Access Removal", ("TA0040",)),
    "T1537": ("Transfer Data to Cloud Account", ("TA0010",)),
    "T1539": ("Steal Web Session Cookie", ("TA0006",)),
    "T1547.006": ("Boot or Logon Autostart Execution: Kernel Modules and Extensions", ("TA0003", "TA0004")),
    "T1550": ("Use Alternate Authentication Material", ("TA0005", "TA0008")),
    "T1550.001": ("Use Alternate Authentication Material: Application Access Token", ("TA0005", "TA0008")),
    "T1550.004": ("Use Alternate Authentication Material: Web Session Cookie", ("TA0005", "TA0008")),
    "T1552": ("Unsecured Credentials", ("TA0006",)),
    "T1552.001": ("Unsecured Credentials: Credentials In Files", ("TA0006",)),
    "T1555": ("Credentials from Password Stores", ("TA0006",)),
    "T1555.006": ("Credentials from Password Stores: Cloud Secrets Management Stores", ("TA0006",)),
    "T1556": ("Modify Authentication Process", ("TA0003", "TA0005", "TA0006")),
    "T1556.006": ("Modify Authentication Process: Multi-Factor Authentication", ("TA0003", "TA0005", "TA0006")),
    "T1562": ("Impair Defenses", ("TA0005",)),
    "T1562.001": ("Impair Defenses: Disable or Modify Tools", ("TA0005",)),
    "T1562.007": ("Impair Defenses: Disable or Modify Cloud Firewall", ("TA0005",)),
    "T1562.008": ("Impair Defenses: Disable or Modify Cloud Logs", ("TA0005",)),
    "T1567": ("Exfiltration Over Web Service", ("TA0010",)),
    "T1572": ("Protocol Tunneling", ("TA0011",)),
    "T1578": ("Modify Cloud Compute Infrastructure", ("TA0005",)),
    "T1578.002": ("Modify Cloud Compute Infrastructure: Create Cloud Instance", ("TA0005",)),
    "T1580": ("Cloud Infrastructure Discovery", ("TA0007",)),
    "T1611": ("Escape to Host", ("TA0004",)),
    "T1619": ("Cloud Storage Object Discovery", ("TA0007",)),
}


def tactic_id(value: str) -> str:
    """A tactic as its id, from the id (TA0006) or the name (Credential Access); ValueError for neither."""
    text = value.strip()
    if text.upper() in TACTICS:
        return text.upper()
    found = _BY_NAME.get(text.lower())
    if found is None:
        raise ValueError(f"{value!r} is not an ATT&CK tactic: use an id such as TA0006 or a name such as "
                         f"'Credential Access' ({', '.join(TACTICS.values())})")
    return found


def tactics_of(techniques: list[str]) -> list[str]:
    """The tactics of these techniques, in kill-chain order; a sub-technique not listed takes its parent's."""
    found: set[str] = set()
    for technique in techniques:
        entry = TECHNIQUES.get(technique) or TECHNIQUES.get(technique.split(".")[0])
        if entry is not None:
            found.update(entry[1])
    return [t for t in TACTICS if t in found]


def tactic_names(tactics: list[str]) -> list[str]:
    return [TACTICS[t] for t in tactics if t in TACTICS]
